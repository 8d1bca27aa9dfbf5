//! A cross-shard hop's round trip: a batch of requests from one thread to another and a reply
//! to each back. `parked`: each thread sleeps whenever it has nothing to do, so a round trip
//! includes two wake-ups of a sleeping thread, as between idle shards; `spinning`: both threads
//! poll without sleeping, as between busy shards, which shows the transport's own cost.
//!
//! `rings`: the shard runtime's transport (`strata_shard::hop`): hops staged, published once
//! per batch into a single-producer single-consumer ring, the receiver woken only when it
//! announced it sleeps, replies back the same way by ticket. `channel`: the transport it
//! replaced, a bounded multi-producer channel carrying the batch and a oneshot channel per
//! request for its reply. Both wait the same way, so only the transports differ; the execution
//! of the command, the same in both, is left out.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_channel::oneshot;
use strata_core::partition::Answer;
use strata_core::ShardId;
use strata_shard::hop::{ring_mesh, Doorbell, Hop, Incoming, Outgoing, ReplyTo};

const BATCHES: [u32; 2] = [1, 64];
/// How long a parked thread sleeps before it looks again at whether the run ended.
const PARK_TIMEOUT: Duration = Duration::from_millis(20);

/// How a thread with nothing to do waits.
#[derive(Clone, Copy)]
enum Waiting {
    Parked,
    Spinning,
}

impl Waiting {
    fn name(self) -> &'static str {
        match self {
            Waiting::Parked => "parked",
            Waiting::Spinning => "spinning",
        }
    }

    /// Waits a little: until unparked (or a timeout), or one spin.
    fn pause(self) {
        match self {
            Waiting::Parked => std::thread::park_timeout(PARK_TIMEOUT),
            Waiting::Spinning => std::hint::spin_loop(),
        }
    }
}

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

fn thread_waker() -> Waker {
    Waker::from(Arc::new(ThreadWaker(std::thread::current())))
}

/// Hands every hop waiting for `incoming` to `handle`, parking (announced on `doorbell`)
/// while there is none; returns how many there were, 0 only once `stop` is set.
fn receive(
    (incoming, doorbell): (&Incoming, &Doorbell),
    (waiting, waker): (Waiting, &Waker),
    stop: &AtomicBool,
    mut handle: impl FnMut(Hop),
) -> usize {
    loop {
        let handled = incoming.drain(&mut handle);
        if handled > 0 || stop.load(Ordering::Relaxed) {
            return handled;
        }
        if let Waiting::Spinning = waiting {
            waiting.pause();
            continue;
        }
        let mut wait = std::pin::pin!(incoming.wait(doorbell));
        if wait.as_mut().poll(&mut Context::from_waker(waker)).is_pending() {
            waiting.pause();
        }
    }
}

fn bench_rings(criterion: &mut Criterion, batch: u32, waiting: Waiting) {
    let mut ends = ring_mesh(2);
    let doorbells: Arc<Vec<Doorbell>> = Arc::new((0..2).map(|_| Doorbell::default()).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let mut remote_producers = std::mem::take(&mut ends[1].producers);
    let remote_incoming = Incoming::new(std::mem::take(&mut ends[1].consumers));
    let remote = {
        let (doorbells, stop) = (Arc::clone(&doorbells), Arc::clone(&stop));
        std::thread::spawn(move || {
            let (outgoing, waker) = (Outgoing::new(2), thread_waker());
            loop {
                let echo = |hop| {
                    if let Hop::Reply { ticket, answer } = hop {
                        outgoing.reply(ReplyTo { shard: ShardId(0), ticket }, answer);
                    }
                };
                let ends = (&remote_incoming, &doorbells[1]);
                if receive(ends, (waiting, &waker), &stop, echo) == 0 {
                    return;
                }
                outgoing.publish(&mut remote_producers, &doorbells);
            }
        })
    };
    let mut producers = std::mem::take(&mut ends[0].producers);
    let incoming = Incoming::new(std::mem::take(&mut ends[0].consumers));
    let (outgoing, waker) = (Outgoing::new(2), thread_waker());
    let mut group = criterion.benchmark_group("shard_hop");
    group.throughput(Throughput::Elements(u64::from(batch)));
    let name = format!("rings/{}", waiting.name());
    group.bench_function(BenchmarkId::new(name, batch), |bencher| {
        bencher.iter(|| {
            for ticket in 0..batch {
                outgoing.reply(ReplyTo { shard: ShardId(1), ticket }, Answer::Integer(1));
            }
            outgoing.publish(&mut producers, &doorbells);
            let mut replies = 0;
            let running = AtomicBool::new(false);
            while replies < batch as usize {
                let ends = (&incoming, &doorbells[0]);
                replies += receive(ends, (waiting, &waker), &running, drop);
            }
        });
    });
    group.finish();
    stop.store(true, Ordering::Relaxed);
    remote.thread().unpark();
    remote.join().expect("the remote thread ends");
}

type Request = (u32, oneshot::Sender<Answer>);

/// Waits for `future`, pausing as `waiting` says between polls.
fn block_on<F: Future>(future: F, waker: &Waker, waiting: Waiting) -> F::Output {
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut Context::from_waker(waker)) {
            return output;
        }
        waiting.pause();
    }
}

/// The next batch on `receiver`, waiting as `waiting` says; None once the sender is gone.
fn next_batch(receiver: &flume::Receiver<Vec<Request>>, waiting: Waiting) -> Option<Vec<Request>> {
    loop {
        match receiver.try_recv() {
            Ok(requests) => return Some(requests),
            Err(flume::TryRecvError::Disconnected) => return None,
            Err(flume::TryRecvError::Empty) => {}
        }
        match waiting {
            Waiting::Parked => return receiver.recv().ok(),
            Waiting::Spinning => waiting.pause(),
        }
    }
}

fn bench_channel(criterion: &mut Criterion, batch: u32, waiting: Waiting) {
    let (sender, receiver) = flume::bounded::<Vec<Request>>(4096);
    let remote = std::thread::spawn(move || {
        while let Some(requests) = next_batch(&receiver, waiting) {
            for (_, reply) in requests {
                let _ = reply.send(Answer::Integer(1));
            }
        }
    });
    let waker = thread_waker();
    let mut group = criterion.benchmark_group("shard_hop");
    group.throughput(Throughput::Elements(u64::from(batch)));
    let name = format!("channel/{}", waiting.name());
    group.bench_function(BenchmarkId::new(name, batch), |bencher| {
        bencher.iter(|| {
            let mut receivers = Vec::with_capacity(batch as usize);
            let mut requests = Vec::with_capacity(batch as usize);
            for index in 0..batch {
                let (reply, answer) = oneshot::channel();
                requests.push((index, reply));
                receivers.push(answer);
            }
            sender.send(requests).expect("the remote thread runs");
            for answer in receivers {
                block_on(answer, &waker, waiting).expect("answered");
            }
        });
    });
    group.finish();
    drop(sender);
    remote.join().expect("the remote thread ends");
}

fn bench_shard_hop(criterion: &mut Criterion) {
    for waiting in [Waiting::Parked, Waiting::Spinning] {
        for batch in BATCHES {
            bench_channel(criterion, batch, waiting);
            bench_rings(criterion, batch, waiting);
        }
    }
}

criterion_group!(benches, bench_shard_hop);
criterion_main!(benches);
