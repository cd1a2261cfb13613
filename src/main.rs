fn main() -> std::process::ExitCode {
    h4fs::cli::main()
}
