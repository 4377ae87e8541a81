//! Free ports, readiness waits, and the AWS environment that keeps the SDK on loopback.

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// Held from choosing a server's free port until the server listens on it. Without it, two servers started at once
/// in one process can be given the same port: the first to bind wins, and the other's readiness wait finds the
/// winner listening and takes it for its own (a cluster would then join a stranger's node).
pub(crate) fn starting_a_server() -> MutexGuard<'static, ()> {
    static STARTING: Mutex<()> = Mutex::new(());
    STARTING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A process-unique counter for names.
pub fn unique() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

/// Waits until something accepts TCP connections on the port.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Static credentials, a region, and no instance metadata: the AWS SDK must never leave the machine.
pub fn set_local_aws_env() {
    // Tests run these once before spawning anything; every value is the same across threads.
    for (key, value) in [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ] {
        if std::env::var(key).as_deref() != Ok(value) {
            std::env::set_var(key, value);
        }
    }
}
