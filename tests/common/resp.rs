//! A raw RESP client for tests: requests out, replies back as the exact
//! bytes the server sent.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A raw RESP connection. The panicking methods are for tests of a server
/// that must answer; the `try_` ones for servers that may be killed.
pub struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::try_connect(addr).unwrap()
    }

    pub fn try_connect(addr: SocketAddr) -> io::Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Client {
            reader: BufReader::new(stream),
        })
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).unwrap();
    }

    fn request(args: &[&str]) -> Vec<u8> {
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
        }
        request
    }

    pub fn send(&mut self, args: &[&str]) {
        self.send_raw(&Self::request(args));
    }

    /// One whole reply, however deeply nested.
    pub fn reply(&mut self) -> String {
        self.try_reply().expect("a reply from the server")
    }

    pub fn try_reply(&mut self) -> io::Result<String> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        if line.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut reply = line.clone();
        let body = line[1..].trim_end();
        let n: i64 = body.parse().unwrap_or(0);
        match line.as_bytes()[0] {
            b'$' | b'=' | b'!' if n >= 0 => {
                let mut bulk = vec![0; n as usize + 2];
                self.reader.read_exact(&mut bulk)?;
                reply.push_str(&String::from_utf8_lossy(&bulk));
            }
            b'*' | b'~' | b'>' => {
                for _ in 0..n {
                    reply.push_str(&self.try_reply()?);
                }
            }
            b'%' => {
                for _ in 0..2 * n {
                    reply.push_str(&self.try_reply()?);
                }
            }
            _ => {}
        }
        Ok(reply)
    }

    pub fn call(&mut self, args: &[&str]) -> String {
        self.send(args);
        self.reply()
    }

    pub fn try_call(&mut self, args: &[&str]) -> io::Result<String> {
        self.reader.get_mut().write_all(&Self::request(args))?;
        self.try_reply()
    }

    /// Whether the server has closed the connection.
    pub fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).is_ok() && rest.is_empty()
    }
}
