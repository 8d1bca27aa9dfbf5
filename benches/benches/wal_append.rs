//! WAL append on the real disk: one 16-record frame per batch, with and without the fdatasync
//! that FlushAtOnce adds to each batch, and in direct mode (O_DIRECT|O_DSYNC, no fdatasync).
//! Runs on a monoio runtime (io_uring where available), as shards do.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use strata_core::frame::encode_frame;
use strata_core::record::Record;
use strata_core::{Epoch, Lsn, PartitionId};
use strata_wal::{PartitionWal, WalConfig};

const RECORDS: usize = 16;
const VALUE_BYTES: usize = 128;
const SEGMENT_BYTES: u64 = 64 << 20;

fn batch() -> Vec<Record> {
    strata_benches::set_records(RECORDS, VALUE_BYTES)
}

/// Appends `iterations` batches to a fresh log, syncing each when `sync`; returns the time.
fn append_batches(iterations: u64, sync: bool, direct_io: bool) -> Duration {
    let directory = tempfile::tempdir().expect("temporary directory");
    let config = WalConfig { segment_bytes: SEGMENT_BYTES, direct_io, ..WalConfig::default() };
    let mut runtime = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .expect("runtime");
    let records = batch();
    runtime.block_on(async move {
        let partition = PartitionId(0);
        let (mut wal, _) =
            PartitionWal::recover(directory.path(), partition, &config, |_, _, _| {}, |_, _| {})
                .expect("fresh log");
        let mut buffer = Vec::new();
        let started = Instant::now();
        for iteration in 0..iterations {
            let first_lsn = Lsn(iteration * RECORDS as u64 + 1);
            encode_frame(&mut buffer, partition, Epoch(1), first_lsn, Lsn(0), &records);
            buffer = wal.append(buffer).await.expect("append");
            if sync {
                wal.sync().await.expect("sync");
            }
        }
        started.elapsed()
    })
}

fn bench_wal_append(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("wal_append");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.sample_size(10);
    group.bench_function("append_16_sets_128b", |bencher| {
        bencher.iter_custom(|iterations| append_batches(iterations, false, false));
    });
    group.bench_function("append_sync_16_sets_128b", |bencher| {
        bencher.iter_custom(|iterations| append_batches(iterations, true, false));
    });
    group.bench_function("append_direct_dsync_16_sets_128b", |bencher| {
        bencher.iter_custom(|iterations| append_batches(iterations, true, true));
    });
    group.finish();
}

criterion_group!(benches, bench_wal_append);
criterion_main!(benches);
