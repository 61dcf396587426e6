//! Feeds arbitrary bytes, in arbitrary pieces, to the server's request
//! reader with small limits. Any input must give requests or a protocol
//! error, never a panic; every request read must come back the same when
//! written as RESP and read again in one piece.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use orcastra::server::resp::{Limits, RequestReader};

fuzz_target!(|data: &[u8]| {
    let Some((&piece, data)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece).max(1);
    let limits = Limits {
        max_bulk: 512,
        max_args: 16,
        max_inline: 256,
    };
    let mut reader = RequestReader::default();
    let mut buf = BytesMut::new();
    for chunk in data.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            match reader.next(&mut buf, &limits) {
                Ok(Some(request)) => {
                    let mut again = BytesMut::from(&format!("*{}\r\n", request.len())[..]);
                    for arg in &request {
                        again.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                        again.extend_from_slice(arg);
                        again.extend_from_slice(b"\r\n");
                    }
                    let read = RequestReader::default().next(&mut again, &limits);
                    assert_eq!(read, Ok(Some(request)));
                    assert!(again.is_empty());
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
