//! The data directory's identity file: what must not change once data exists.

use std::path::Path;

const META_FILE: &str = "strata.meta";
const LOCK_FILE: &str = "strata.lock";

/// Creates the data directory and its meta file, or checks that the partition count matches
/// the one the directory was created with. Returns the cluster id: 16 hex digits made when
/// the directory was created (or given, for a restored directory), the second half of the
/// node's prefix in the archive.
pub fn prepare_data_dir(
    data_dir: &Path,
    partitions: u32,
    cluster_id: Option<&str>,
) -> Result<String, String> {
    std::fs::create_dir_all(data_dir)
        .map_err(|error| format!("cannot create {}: {error}", data_dir.display()))?;
    let path = data_dir.join(META_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let stored = parse_field(&text, "partitions")
                .and_then(|value| value.parse::<u32>().ok())
                .ok_or_else(|| format!("{} is damaged: no partitions line", path.display()))?;
            if stored != partitions {
                return Err(format!(
                    "cluster.partitions is {partitions} but {} was created with {stored}; \
                     the partition count is fixed once data exists",
                    data_dir.display()
                ));
            }
            if let Some(id) = parse_field(&text, "cluster_id") {
                return Ok(id);
            }
            // A directory from before cluster ids: give it one.
            let id = cluster_id.map_or_else(new_cluster_id, str::to_string);
            write_meta(data_dir, partitions, &id)?;
            Ok(id)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let id = cluster_id.map_or_else(new_cluster_id, str::to_string);
            write_meta(data_dir, partitions, &id)?;
            Ok(id)
        }
        Err(error) => Err(format!("cannot read {}: {error}", path.display())),
    }
}

fn write_meta(data_dir: &Path, partitions: u32, cluster_id: &str) -> Result<(), String> {
    let path = data_dir.join(META_FILE);
    let text = format!("format = 1\npartitions = {partitions}\ncluster_id = {cluster_id}\n");
    let temporary = data_dir.join(format!("{META_FILE}.tmp"));
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::File::open(&temporary)?.sync_all())
        .and_then(|()| std::fs::rename(&temporary, &path))
        .and_then(|()| std::fs::File::open(data_dir)?.sync_all())
        .map_err(|error| format!("cannot write {}: {error}", path.display()))
}

/// 64 random bits as 16 hex digits, from the kernel's random source.
fn new_cluster_id() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    if std::fs::File::open("/dev/urandom").and_then(|mut file| file.read_exact(&mut bytes)).is_err()
    {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        bytes = (nanos as u64 ^ u64::from(std::process::id()).rotate_left(32)).to_le_bytes();
    }
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Takes an exclusive lock on the data directory for the life of the returned file, so that
/// two nodes never write the same WAL.
pub fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, String> {
    let path = data_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|error| format!("cannot open {}: {error}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "{} is in use by another strata node (lock file {})",
            data_dir.display(),
            path.display()
        )),
        Err(std::fs::TryLockError::Error(error)) => {
            Err(format!("cannot lock {}: {error}", path.display()))
        }
    }
}

/// Fails if something already listens on `address`. The shards bind with SO_REUSEPORT, which
/// would otherwise let a second node silently share the port with the first. A connection
/// attempt tells a listener from sockets that merely linger after a previous process died.
pub fn check_port_free(address: std::net::SocketAddr) -> Result<(), String> {
    let mut target = address;
    if target.ip().is_unspecified() {
        let loopback: std::net::IpAddr = if address.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        target.set_ip(loopback);
    }
    // A process killed with accepts in flight on io_uring leaves its listening socket open for
    // a moment while the kernel tears the ring down: wait that out before calling it a clash.
    let deadline = std::time::Instant::now() + PORT_RELEASE_WAIT;
    let timeout = std::time::Duration::from_millis(200);
    while std::net::TcpStream::connect_timeout(&target, timeout).is_ok() {
        if std::time::Instant::now() >= deadline {
            return Err(format!("cannot listen on {address}: another process is listening there"));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(())
}

/// How long a port may stay taken by a process that just died.
const PORT_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Binds a listener on `address`. A process killed with io_uring work in flight keeps its whole
/// descriptor table, listeners included, until the kernel has torn its ring down: a port still
/// in use is tried again for a moment before it counts as taken.
pub fn bind_listener(address: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let deadline = std::time::Instant::now() + PORT_RELEASE_WAIT;
    loop {
        match std::net::TcpListener::bind(address) {
            Err(error)
                if error.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            outcome => return outcome,
        }
    }
}

fn parse_field(text: &str, field: &str) -> Option<String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .find(|(name, _)| name.trim() == field)
        .map(|(_, value)| value.trim().to_string())
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_directory_takes_one_node_only() {
        let directory = tempfile::tempdir().unwrap();
        let first = lock_data_dir(directory.path()).unwrap();
        let error = lock_data_dir(directory.path()).unwrap_err();
        assert!(error.contains("in use by another strata node"), "{error}");
        drop(first);
        lock_data_dir(directory.path()).unwrap();
    }

    #[test]
    fn a_taken_port_is_reported() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        assert!(check_port_free(address).is_err());
        drop(listener);
        check_port_free(address).unwrap();
    }

    #[test]
    fn partition_count_is_fixed_once_written() {
        let directory = tempfile::tempdir().unwrap();
        let id = prepare_data_dir(directory.path(), 8, None).unwrap();
        assert_eq!(id.len(), 16);
        assert_eq!(prepare_data_dir(directory.path(), 8, None).unwrap(), id, "the id stays");
        let error = prepare_data_dir(directory.path(), 16, None).unwrap_err();
        assert!(error.contains("fixed"), "{error}");
    }
}
