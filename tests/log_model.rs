//! Random sequences of appends, reads, reopens and retention against a
//! `Vec` model, for every backend.

mod common;

use common::{Backend, Memory, Segment, Text, read_all};
use orcastra::log::{FsyncPolicy, Log, LogError, LogOptions, Offset};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Append(Vec<Vec<u8>>),
    /// Read from a position picked by this fraction of the log, at most this many.
    Read(f64, usize),
    /// Drop before a position picked by this fraction of the log.
    DropBefore(f64),
    Reopen,
}

fn record() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..40),
        1 => prop::collection::vec(any::<u8>(), 300..2000),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(record(), 0..12).prop_map(Op::Append),
        3 => (0.0..=1.0, 0usize..50).prop_map(|(at, max)| Op::Read(at, max)),
        1 => (0.0..=1.0).prop_map(Op::DropBefore),
        1 => Just(Op::Reopen),
    ]
}

/// What the log must hold: `records[i]` is at offset `start + i`.
struct Model {
    start: u64,
    records: Vec<Vec<u8>>,
}

impl Model {
    fn end(&self) -> u64 {
        self.start + self.records.len() as u64
    }

    fn pick(&self, fraction: f64) -> u64 {
        self.start + (fraction * self.records.len() as f64) as u64
    }
}

fn options() -> LogOptions {
    LogOptions::default()
        .fsync(FsyncPolicy::Never)
        .segment_bytes(4096)
        .index_interval_bytes(64)
        .max_mapped_segments(2)
}

fn run<B: Backend>(backend: B, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut log = Some(backend.open(options()).unwrap());
    let mut model = Model {
        start: 0,
        records: Vec::new(),
    };
    for op in ops {
        let current = log.as_ref().unwrap();
        match op {
            Op::Append(batch) => {
                let offsets = runtime.block_on(current.append(&batch)).unwrap();
                prop_assert_eq!(
                    offsets,
                    Offset(model.end())..Offset(model.end() + batch.len() as u64)
                );
                model.records.extend(batch);
            }
            Op::Read(at, max) => {
                let from = model.pick(at);
                let read = current.read(Offset(from), max).unwrap();
                let i = (from - model.start) as usize;
                let expected = &model.records[i..model.records.len().min(i + max)];
                prop_assert_eq!(read.len(), expected.len());
                for (got, want) in read.iter().zip(expected) {
                    prop_assert_eq!(got.as_ref(), want.as_slice());
                }
            }
            Op::DropBefore(at) => {
                let offset = model.pick(at);
                current.drop_before(Offset(offset)).unwrap();
                let start = current.start_offset().0;
                prop_assert!(model.start <= start && start <= offset);
                model.records.drain(..(start - model.start) as usize);
                model.start = start;
                if start > 0 {
                    let trimmed = current.read(Offset(start - 1), 1);
                    let is_trimmed = matches!(trimmed, Err(LogError::OffsetTrimmed { .. }));
                    prop_assert!(is_trimmed, "{:?}", trimmed);
                }
            }
            Op::Reopen if B::PERSISTENT => {
                drop(log.take());
                log = Some(backend.open(options()).unwrap());
            }
            Op::Reopen => {}
        }
        let current = log.as_ref().unwrap();
        prop_assert_eq!(current.start_offset(), Offset(model.start));
        prop_assert_eq!(current.next_offset(), Offset(model.end()));
    }
    prop_assert_eq!(read_all(log.as_ref().unwrap()), model.records);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn memory_log_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
        run(Memory, ops)?;
    }

    #[test]
    fn segment_log_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
        run(Segment::on_disk(), ops)?;
    }

    #[test]
    fn text_log_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
        run(Text::on_disk(), ops)?;
    }
}
