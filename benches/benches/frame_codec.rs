//! The WAL frame codec on a typical group-commit batch: 16 `Set` records with 128-byte values.
//! Encoding is on every append; reading in place is on recovery and on every follower, decoding
//! into owned records what they did before.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use strata_core::frame::{decode_frame, decode_records, encode_frame, read_records};
use strata_core::record::Record;
use strata_core::{Epoch, Lsn, PartitionId};

const RECORDS: usize = 16;
const VALUE_BYTES: usize = 128;

fn set_records() -> Vec<Record> {
    strata_benches::set_records(RECORDS, VALUE_BYTES)
}

fn encode(output: &mut Vec<u8>, records: &[Record]) {
    output.clear();
    encode_frame(output, PartitionId(3), Epoch(1), Lsn(1), Lsn(0), records);
}

fn bench_frame_codec(criterion: &mut Criterion) {
    let records = set_records();
    let mut frame = Vec::new();
    encode(&mut frame, &records);
    let header = decode_frame(&frame).expect("valid frame");
    assert_eq!(decode_records(&frame, &header).expect("valid records"), records);

    let mut group = criterion.benchmark_group("frame_codec");
    group.throughput(Throughput::Elements(RECORDS as u64));
    let mut output = Vec::with_capacity(frame.len());
    group.bench_function("encode_16_sets_128b", |bencher| {
        bencher.iter(|| encode(&mut output, std::hint::black_box(&records)));
    });
    group.bench_function("decode_16_sets_128b", |bencher| {
        bencher.iter(|| {
            let header = decode_frame(std::hint::black_box(&frame)).expect("valid frame");
            decode_records(&frame, &header).expect("valid records")
        });
    });
    group.bench_function("read_in_place_16_sets_128b", |bencher| {
        bencher.iter(|| {
            let header = decode_frame(std::hint::black_box(&frame)).expect("valid frame");
            let records = read_records(&frame, &header).expect("valid records");
            records.iter().for_each(|record| {
                std::hint::black_box(record);
            });
        });
    });
    group.finish();
}

criterion_group!(benches, bench_frame_codec);
criterion_main!(benches);
