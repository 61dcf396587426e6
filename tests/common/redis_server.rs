//! A real `redis-server` for tests and benchmarks: started from PATH on
//! 127.0.0.1 and a free port, with its own temporary directory, and killed
//! when dropped. Tests that need Redis fail with a clear message when it
//! cannot be started; they are never skipped.
#![allow(dead_code)] // the benchmarks use only part of it

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a server may take to answer its first PING.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    args: Vec<String>,
}

impl RedisServer {
    /// A server without persistence, as Redis runs by default.
    pub fn start() -> Self {
        Self::with_args(&["--save", "", "--appendonly", "no"])
    }

    /// A server that writes every command to its append-only file and
    /// fsyncs it before replying, so that what it acknowledged survives a
    /// kill.
    pub fn persistent() -> Self {
        Self::with_args(&[
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
    }

    /// A server started with these extra arguments.
    pub fn with_args(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory for redis-server");
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir,
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        // Another process may take the free port before the server binds it.
        let mut last_error = String::new();
        for _ in 0..5 {
            server.port = free_port();
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("could not start redis-server: {last_error}");
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server with SIGKILL and waits for it to go.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, with the same directory
    /// (and so the same data, if it is persistent).
    pub fn restart(&mut self) {
        self.kill();
        let mut last_error = String::new();
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            match self.spawn() {
                Ok(()) => return,
                // The port can linger for a moment after the kill.
                Err(e) => last_error = e,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("could not restart redis-server: {last_error}");
    }

    /// Sends one inline command; returns a status, error or integer reply
    /// as its line (`+OK`, `-ERR …`, `:1`), a bulk reply as its contents.
    pub fn command(&self, line: &str) -> String {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        (&stream)
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        let mut reader = BufReader::new(&stream);
        let mut first = String::new();
        reader.read_line(&mut first).unwrap();
        let first = first.trim_end();
        match first.strip_prefix('$').map(str::parse::<usize>) {
            Some(Ok(len)) => {
                let mut bulk = vec![0; len + 2];
                reader.read_exact(&mut bulk).unwrap();
                bulk.truncate(len);
                String::from_utf8_lossy(&bulk).into_owned()
            }
            _ => first.to_string(),
        }
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = self.dir.path().join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot run redis-server from PATH ({e}); install it, e.g. \
                     `apt-get install -y redis-server`"
                )
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("redis-server exited with {status}: {log}"));
            }
            if ping(self.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "redis-server did not answer PING in {START_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nothing listens on at the moment.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Whether a server answers on `port`: PONG, or NOAUTH from one that wants
/// a password (not LOADING from one still reading its data).
fn ping(port: u16) -> bool {
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = String::new();
    (&stream).write_all(b"PING\r\n").is_ok()
        && BufReader::new(&stream).read_line(&mut reply).is_ok()
        && (reply.starts_with("+PONG") || reply.starts_with("-NOAUTH"))
}
