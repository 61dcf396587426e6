//! Decodes arbitrary bytes as a record, aligned and not. Any input must give
//! a record or an error, never a panic; a decoded record must encode back to
//! something that decodes to the same record.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use orcastra::Record;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = Record::decode(Bytes::copy_from_slice(data)) {
        let again = Record::decode(Bytes::from(record.encode())).expect("re-encoded record decodes");
        assert_eq!(again, record);
    }
    // The same bytes one byte off 8-byte alignment take the copying path.
    let mut shifted = vec![0];
    shifted.extend_from_slice(data);
    let _ = Record::decode(Bytes::from(shifted).slice(1..));
});
