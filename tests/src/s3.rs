//! The real S3 server the tests use (started by `scripts/s3-server.sh`, which exports its
//! address and keys), a client of it, and a TCP proxy in front of it that a test can cut to
//! play an outage.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where the S3 server is, from the `STRATA_S3_*` environment variables.
#[derive(Clone, Debug)]
pub struct S3 {
    pub url: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
}

impl S3 {
    /// # Panics
    /// When the variables are missing: the S3 server has to be started first.
    #[must_use]
    pub fn from_env() -> S3 {
        let variable = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!(
                    "{name} is not set: start the S3 server with scripts/s3-server.sh start, then \
                     eval \"$(scripts/s3-server.sh env)\" (scripts/test.sh does both)"
                )
            })
        };
        S3 {
            url: variable("STRATA_S3_URL"),
            bucket: variable("STRATA_S3_BUCKET"),
            access_key: variable("STRATA_S3_ACCESS_KEY"),
            secret_key: variable("STRATA_S3_SECRET_KEY"),
        }
    }

    /// `[storage]` lines for a node archiving to this server (or to `url` in front of it).
    #[must_use]
    pub fn storage_lines(&self, url: Option<&str>) -> String {
        format!(
            "storage_type = \"minio\"\nupload_interval = 200\n[storage.object_storage]\n\
             url = \"{}\"\nbucket_name = \"{}\"\naccess_key = \"{}\"\nsecret_key = \"{}\"\n",
            url.unwrap_or(&self.url),
            self.bucket,
            self.access_key,
            self.secret_key
        )
    }

    /// A client of the bucket.
    ///
    /// # Panics
    /// When the settings are unusable.
    #[must_use]
    pub fn store(&self) -> strata_archive::Store {
        strata_archive::connect(&strata_archive::StoreLocation::S3 {
            endpoint: self.url.clone(),
            bucket: self.bucket.clone(),
            access_key: self.access_key.clone(),
            secret_key: self.secret_key.clone(),
        })
        .expect("S3 client")
    }
}

/// Runs `future` to completion on a fresh single-threaded runtime.
///
/// # Panics
/// When the runtime cannot start.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(future)
}

/// A TCP proxy on 127.0.0.1 to `target`; [`cut`](Self::cut) drops every connection and
/// refuses new ones until [`mend`](Self::mend).
pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    /// # Panics
    /// When it cannot listen.
    #[must_use]
    pub fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listener");
        let port = listener.local_addr().expect("proxy address").port();
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let target = target.trim_start_matches("http://").to_string();
        let (accept_cut, accept_open) = (Arc::clone(&cut), Arc::clone(&open));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if accept_cut.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else { continue };
                if let Ok(mut open) = accept_open.lock() {
                    open.retain(|stream| stream.peer_addr().is_ok());
                    open.extend([client.try_clone(), server.try_clone()].into_iter().flatten());
                }
                pipe(&client, &server);
                pipe(&server, &client);
            }
        });
        Proxy { port, cut, open }
    }

    #[must_use]
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        if let Ok(mut open) = self.open.lock() {
            for stream in open.drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }

    /// Lets connections through again.
    pub fn mend(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` on a thread of its own until either side closes.
fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else { return };
    std::thread::spawn(move || {
        let _ = from.set_read_timeout(Some(Duration::from_secs(300)));
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => {
                    if to.write_all(&buffer[..read]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
