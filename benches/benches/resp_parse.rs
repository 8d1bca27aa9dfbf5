//! Parsing a pipelined batch: 16 `SET key:<n> <128-byte value>` commands in one buffer, as one
//! read from a client with `-P 16` delivers them.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use strata_core::resp::{self, Argument, Parsed, RespLimits};

const COMMANDS: usize = 16;
const VALUE_BYTES: usize = 128;

fn pipelined_sets() -> Vec<u8> {
    let value = vec![b'x'; VALUE_BYTES];
    let mut input = Vec::new();
    for index in 0..COMMANDS {
        let key = format!("key:{index}");
        resp::encode_command(&mut input, &[b"SET", key.as_bytes(), &value]);
    }
    input
}

/// Parses every command in `input`; returns how many there were.
fn parse_all(input: &[u8], limits: &RespLimits, arguments: &mut Vec<Argument>) -> usize {
    let mut start = 0;
    let mut commands = 0;
    while start < input.len() {
        match resp::parse_command(&input[start..], limits, arguments).expect("valid input") {
            Parsed::Complete { consumed } => start += consumed,
            Parsed::Incomplete => panic!("the batch holds whole commands"),
        }
        assert_eq!(arguments.len(), 3);
        commands += 1;
    }
    commands
}

fn bench_parse(criterion: &mut Criterion) {
    let input = pipelined_sets();
    let limits = RespLimits::default();
    let mut arguments = Vec::with_capacity(3);
    assert_eq!(parse_all(&input, &limits, &mut arguments), COMMANDS);
    let mut group = criterion.benchmark_group("resp_parse");
    group.throughput(Throughput::Elements(COMMANDS as u64));
    group.bench_function("pipelined_16_sets_128b", |bencher| {
        bencher.iter_batched_ref(
            Vec::new,
            |arguments| parse_all(std::hint::black_box(&input), &limits, arguments),
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
