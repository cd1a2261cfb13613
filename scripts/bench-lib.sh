# Helpers shared by the benchmark scripts (sourced, not run).

# Read all of FILE (a file of an h4fs mount) through the daemon in 1 MiB direct reads,
# each 4 MiB from the one before (0, 4, 8 ... MiB, then 1, 5, 9 ...), so that no read
# continues the previous one and the daemon keeps what it verified in its cache (a
# reader that reads on leaves nothing behind). A read from offset 0 starts a reader, so
# the first 4 KiB are read last, on their own.
fill_daemon_cache() {
    local f=$1 mib i j
    mib=$(( ($(stat -c %s "$f") + 1048575) / 1048576 ))
    dd if="$f" of=/dev/null bs=4K skip=1 count=255 iflag=direct status=none
    for ((j = 0; j < 4; j++)); do
        for ((i = j; i < mib; i += 4)); do
            ((i == 0)) && continue
            dd if="$f" of=/dev/null bs=1M skip="$i" count=1 iflag=direct status=none
        done
    done
    dd if="$f" of=/dev/null bs=4K count=1 iflag=direct status=none
}
