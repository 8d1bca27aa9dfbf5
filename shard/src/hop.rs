//! Cross-shard hops: how a command reaches the partition another shard owns, and how its
//! answer comes back.
//!
//! Every ordered pair of shards has one bounded single-producer single-consumer ring
//! (`HOP_RING_SLOTS` hops). A shard's tasks never write a ring directly: requests (from its
//! connections) and replies (to other shards' connections) are staged per destination in
//! [`Outgoing`], and the shard's sender task (`Shard::send_hops`) moves all that
//! was staged during one turn of the executor into each ring at once: one publication (a
//! release store) per destination per turn, however many connections staged.
//!
//! A shard's receiver task drains all its incoming rings each time it runs and, while it found
//! something, yields and drains again after the turn's other tasks. Only when a drain finds
//! nothing does it announce on its [`Doorbell`] that it sleeps, and a sender wakes it only then:
//! while traffic flows the receiver polls and nobody wakes it. The wake-up is a cross-thread
//! wake of the task, which monoio turns into an eventfd write only if the thread is parked.
//!
//! Replies need no channel per request: a request carries a ticket, an index into its origin
//! shard's `Tickets`, and the reply names it. A ticket is freed only once its reply arrived,
//! so an index is never reused while a reply to it may be on its way.

use std::cell::RefCell;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use rtrb::{Consumer, Producer, RingBuffer};
use strata_core::command::table::CommandId;
use strata_core::command::KeyCommand;
use strata_core::partition::Answer;
use strata_core::{PartitionId, ShardId};

use crate::signal::Signal;

/// Hops one ring holds. A sender whose ring is full keeps the rest staged and retries
/// ([`RING_FULL_RETRY`]); the receiver drains without ever waiting, so a full ring empties.
pub(crate) const HOP_RING_SLOTS: usize = 4096;
/// How long a sender whose ring is full waits before it tries again.
pub(crate) const RING_FULL_RETRY: std::time::Duration = std::time::Duration::from_micros(200);

/// A command for a partition another shard owns.
pub struct ShardRequest {
    pub(crate) partition: PartitionId,
    pub(crate) command: KeyCommand,
    /// The client command this is (part of), whose commandstats the execution time joins.
    pub(crate) command_id: Option<CommandId>,
    pub(crate) now_ms: u64,
    /// Where the answer goes: the origin shard's ticket.
    pub(crate) reply_to: ReplyTo,
}

/// The origin of a request: its shard and the ticket its connection waits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyTo {
    pub shard: ShardId,
    pub ticket: u32,
}

/// What crosses from one shard to another.
pub enum Hop {
    Request(ShardRequest),
    Reply { ticket: u32, answer: Answer },
}

/// A shard's announcement that it sleeps, shared with every shard that sends to it.
#[derive(Default)]
pub struct Doorbell {
    sleeping: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Doorbell {
    /// Called by a sender after it published hops: wakes the receiver if it announced it
    /// sleeps. Returns whether it woke it.
    pub fn ring(&self) -> bool {
        // Pairs with the fence in `announce_sleep`: either the receiver sees the hops just
        // published, or this sees its announcement.
        fence(Ordering::SeqCst);
        if !self.sleeping.load(Ordering::Relaxed) || !self.sleeping.swap(false, Ordering::AcqRel) {
            return false;
        }
        let waker = self.waker.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// Called by the receiver after a drain found nothing: registers its waker, then says it
    /// sleeps. The caller must look at its rings once more after this.
    fn announce_sleep(&self, waker: &Waker) {
        let mut slot = self.waker.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !slot.as_ref().is_some_and(|current| current.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
        drop(slot);
        self.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// The receiver found hops after announcing: it is awake after all.
    fn cancel_sleep(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }
}

/// One shard's ends of the rings: a producer towards every other shard and a consumer from
/// every other shard (`None` at the shard's own index).
pub struct RingEnds {
    pub producers: Vec<Option<Producer<Hop>>>,
    pub consumers: Vec<Option<Consumer<Hop>>>,
}

/// The rings of `shard_count` shards: one per ordered pair, its producer in the sender's ends
/// and its consumer in the receiver's.
pub fn ring_mesh(shard_count: usize) -> Vec<RingEnds> {
    let mut ends: Vec<RingEnds> = (0..shard_count)
        .map(|_| RingEnds {
            producers: (0..shard_count).map(|_| None).collect(),
            consumers: (0..shard_count).map(|_| None).collect(),
        })
        .collect();
    for sender in 0..shard_count {
        for receiver in (0..shard_count).filter(|receiver| *receiver != sender) {
            let (producer, consumer) = RingBuffer::new(HOP_RING_SLOTS);
            ends[sender].producers[receiver] = Some(producer);
            ends[receiver].consumers[sender] = Some(consumer);
        }
    }
    ends
}

/// What one publication moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// Requests and replies moved into rings.
    pub hops: u64,
    /// Rings published to (one per destination that had something).
    pub messages: u64,
    /// Receivers woken because they slept.
    pub wakeups: u64,
    /// Hops left staged because a ring was full.
    pub left: usize,
}

/// Hops staged during a turn, per destination shard, for the sender task. Shared (by `Rc`)
/// with the partitions, whose commits release replies to other shards.
pub struct Outgoing {
    staged: RefCell<Vec<Vec<Hop>>>,
    /// Raised when something is staged: the sender task runs after this turn's other tasks.
    pub(crate) signal: Signal,
}

impl Outgoing {
    #[must_use]
    pub fn new(shard_count: usize) -> Outgoing {
        Outgoing {
            staged: RefCell::new((0..shard_count).map(|_| Vec::new()).collect()),
            signal: Signal::default(),
        }
    }

    pub(crate) fn stage(&self, destination: ShardId, hop: Hop) {
        self.staged.borrow_mut()[destination.0 as usize].push(hop);
        self.signal.raise();
    }

    /// Sends `answer` to the connection waiting on `reply_to`.
    pub fn reply(&self, reply_to: ReplyTo, answer: Answer) {
        self.stage(reply_to.shard, Hop::Reply { ticket: reply_to.ticket, answer });
    }

    /// Moves what is staged into the rings, as much as fits, and rings the doorbells of the
    /// receivers that sleep.
    pub fn publish(
        &self,
        producers: &mut [Option<Producer<Hop>>],
        doorbells: &[Doorbell],
    ) -> Published {
        let mut published = Published::default();
        let mut staged = self.staged.borrow_mut();
        for (destination, hops) in staged.iter_mut().enumerate() {
            if hops.is_empty() {
                continue;
            }
            let producer = producers[destination].as_mut().expect("a ring to every other shard");
            let count = producer.slots().min(hops.len());
            if count > 0 {
                let chunk = producer.write_chunk_uninit(count).expect("free slots were counted");
                let moved = chunk.fill_from_iter(hops.drain(..count));
                assert_eq!(moved, count);
                published.hops += count as u64;
                published.messages += 1;
                published.wakeups += u64::from(doorbells[destination].ring());
            }
            published.left += hops.len();
        }
        published
    }
}

/// The state of one ticket.
enum TicketState {
    Free,
    /// The request is on its way; the waker of the connection waiting for it.
    Waiting(Option<Waker>),
    Answered(Answer),
    /// Its connection stopped waiting: freed when the reply comes.
    Abandoned,
}

/// The answers this shard's connections wait for from other shards. Bounded by the requests in
/// flight: connections times their round's commands.
#[derive(Default)]
pub(crate) struct Tickets {
    states: RefCell<Vec<TicketState>>,
    free: RefCell<Vec<u32>>,
}

impl Tickets {
    pub(crate) fn issue(&self) -> u32 {
        let mut states = self.states.borrow_mut();
        if let Some(ticket) = self.free.borrow_mut().pop() {
            let state = &mut states[ticket as usize];
            assert!(matches!(state, TicketState::Free));
            *state = TicketState::Waiting(None);
            return ticket;
        }
        let ticket = u32::try_from(states.len()).expect("fewer than 2^32 requests in flight");
        states.push(TicketState::Waiting(None));
        ticket
    }

    /// A reply arrived. A ticket that is not waiting (a peer's bug or garbage) is ignored.
    pub(crate) fn deliver(&self, ticket: u32, answer: Answer) {
        let mut states = self.states.borrow_mut();
        let Some(state) = states.get_mut(ticket as usize) else { return };
        match std::mem::replace(state, TicketState::Free) {
            TicketState::Waiting(waker) => {
                *state = TicketState::Answered(answer);
                if let Some(waker) = waker {
                    waker.wake();
                }
            }
            TicketState::Abandoned => {
                drop(states);
                self.free.borrow_mut().push(ticket);
            }
            other => *state = other,
        }
    }

    pub(crate) fn poll(&self, ticket: u32, context: &mut Context<'_>) -> Poll<Answer> {
        let mut states = self.states.borrow_mut();
        let state = &mut states[ticket as usize];
        match std::mem::replace(state, TicketState::Free) {
            TicketState::Answered(answer) => {
                drop(states);
                self.free.borrow_mut().push(ticket);
                Poll::Ready(answer)
            }
            TicketState::Waiting(_) => {
                *state = TicketState::Waiting(Some(context.waker().clone()));
                Poll::Pending
            }
            other => unreachable!("polled a ticket that is {}", other.name()),
        }
    }

    /// The waiting connection went away before the answer was taken.
    pub(crate) fn abandon(&self, ticket: u32) {
        let mut states = self.states.borrow_mut();
        let state = &mut states[ticket as usize];
        match state {
            TicketState::Waiting(_) => *state = TicketState::Abandoned,
            TicketState::Answered(_) => {
                *state = TicketState::Free;
                drop(states);
                self.free.borrow_mut().push(ticket);
            }
            TicketState::Free | TicketState::Abandoned => {}
        }
    }

    /// Tickets issued and not yet freed.
    #[cfg(test)]
    pub(crate) fn outstanding(&self) -> usize {
        self.states.borrow().iter().filter(|state| !matches!(state, TicketState::Free)).count()
    }
}

impl TicketState {
    fn name(&self) -> &'static str {
        match self {
            TicketState::Free => "free",
            TicketState::Waiting(_) => "waiting",
            TicketState::Answered(_) => "answered",
            TicketState::Abandoned => "abandoned",
        }
    }
}

/// The receiving side of one shard: its consumers, one per other shard.
pub struct Incoming {
    consumers: RefCell<Vec<Option<Consumer<Hop>>>>,
}

impl Incoming {
    #[must_use]
    pub fn new(consumers: Vec<Option<Consumer<Hop>>>) -> Incoming {
        Incoming { consumers: RefCell::new(consumers) }
    }

    /// Hands every hop waiting in every ring to `handle`, in each ring's order, straight from
    /// the ring's slots; returns how many there were. `handle` must not drain again.
    pub fn drain(&self, mut handle: impl FnMut(Hop)) -> usize {
        let mut handled = 0;
        for consumer in self.consumers.borrow_mut().iter_mut().flatten() {
            let count = consumer.slots();
            if count == 0 {
                continue;
            }
            let chunk = consumer.read_chunk(count).expect("the slots were counted");
            chunk.into_iter().for_each(&mut handle);
            handled += count;
        }
        handled
    }

    fn any_waiting(&self) -> bool {
        self.consumers.borrow().iter().flatten().any(|consumer| !consumer.is_empty())
    }

    /// Resolves at once if a ring holds hops; otherwise announces sleep on `doorbell` and
    /// resolves when a sender rings it.
    pub fn wait<'a>(&'a self, doorbell: &'a Doorbell) -> IncomingWait<'a> {
        IncomingWait { incoming: self, doorbell }
    }
}

pub struct IncomingWait<'a> {
    incoming: &'a Incoming,
    doorbell: &'a Doorbell,
}

impl std::future::Future for IncomingWait<'_> {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if self.incoming.any_waiting() {
            self.doorbell.cancel_sleep();
            return Poll::Ready(());
        }
        self.doorbell.announce_sleep(context.waker());
        if self.incoming.any_waiting() {
            self.doorbell.cancel_sleep();
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// Resolves after letting every other ready task of the shard run once.
pub(crate) async fn yield_turn() {
    let mut yielded = false;
    std::future::poll_fn(|context| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        context.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    fn answer(text: &str) -> Answer {
        Answer::Error(strata_core::command::CommandError(text.into()))
    }

    fn noop_context() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    #[test]
    fn a_ticket_is_reused_only_after_its_reply_came() {
        let tickets = Tickets::default();
        let first = tickets.issue();
        tickets.abandon(first);
        let second = tickets.issue();
        assert_ne!(first, second, "an abandoned ticket waits for its reply");
        tickets.deliver(first, answer("late"));
        assert_eq!(tickets.issue(), first);
        assert_eq!(tickets.outstanding(), 2);
    }

    #[test]
    fn an_answer_that_came_first_is_taken_at_the_first_poll() {
        let tickets = Tickets::default();
        let ticket = tickets.issue();
        let mut context = noop_context();
        assert!(tickets.poll(ticket, &mut context).is_pending());
        tickets.deliver(ticket, answer("one"));
        assert!(matches!(tickets.poll(ticket, &mut context), Poll::Ready(Answer::Error(_))));
        assert_eq!(tickets.outstanding(), 0);
        tickets.deliver(ticket, answer("again"));
        tickets.deliver(999, answer("unknown"));
        assert_eq!(tickets.outstanding(), 0, "a reply to no waiting ticket is ignored");
    }

    #[test]
    fn a_turn_publishes_once_per_destination_and_rings_only_a_sleeper() {
        let mut ends = ring_mesh(3);
        let doorbells: Vec<Doorbell> = (0..3).map(|_| Doorbell::default()).collect();
        let outgoing = Outgoing::new(3);
        for ticket in 0..5 {
            outgoing.reply(ReplyTo { shard: ShardId(1), ticket }, answer("a"));
        }
        outgoing.reply(ReplyTo { shard: ShardId(2), ticket: 9 }, answer("b"));
        doorbells[2].announce_sleep(Waker::noop());
        let published = outgoing.publish(&mut ends[0].producers, &doorbells);
        assert_eq!(published, Published { hops: 6, messages: 2, wakeups: 1, left: 0 });
        let incoming = Incoming::new(std::mem::take(&mut ends[1].consumers));
        let mut tickets = Vec::new();
        incoming.drain(|hop| match hop {
            Hop::Reply { ticket, .. } => tickets.push(ticket),
            Hop::Request(_) => panic!("only replies were sent"),
        });
        assert_eq!(tickets, [0, 1, 2, 3, 4], "a ring keeps its order");
    }

    #[test]
    fn a_full_ring_keeps_the_rest_staged() {
        let mut ends = ring_mesh(2);
        let doorbells: Vec<Doorbell> = (0..2).map(|_| Doorbell::default()).collect();
        let outgoing = Outgoing::new(2);
        let extra = 10;
        for ticket in 0..(HOP_RING_SLOTS + extra) as u32 {
            outgoing.reply(ReplyTo { shard: ShardId(1), ticket }, answer("x"));
        }
        let published = outgoing.publish(&mut ends[0].producers, &doorbells);
        assert_eq!(published.hops, HOP_RING_SLOTS as u64);
        assert_eq!(published.left, extra);
        let incoming = Incoming::new(std::mem::take(&mut ends[1].consumers));
        assert_eq!(incoming.drain(drop), HOP_RING_SLOTS);
        let published = outgoing.publish(&mut ends[0].producers, &doorbells);
        assert_eq!((published.hops, published.left), (extra as u64, 0));
        assert_eq!(incoming.drain(drop), extra);
    }

    #[test]
    fn a_sleeper_is_woken_by_hops_published_from_another_thread() {
        let mut ends = ring_mesh(2);
        let doorbells: std::sync::Arc<Vec<Doorbell>> =
            std::sync::Arc::new((0..2).map(|_| Doorbell::default()).collect());
        let incoming = Incoming::new(std::mem::take(&mut ends[1].consumers));
        let mut producers = std::mem::take(&mut ends[0].producers);
        let sender_doorbells = std::sync::Arc::clone(&doorbells);
        let rounds = 2_000u32;
        let sender = std::thread::spawn(move || {
            let outgoing = Outgoing::new(2);
            let mut wakeups = 0;
            for ticket in 0..rounds {
                outgoing.reply(ReplyTo { shard: ShardId(1), ticket }, answer("x"));
                let published = outgoing.publish(&mut producers, &sender_doorbells);
                assert_eq!(published.left, 0);
                wakeups += published.wakeups;
            }
            wakeups
        });
        let mut received = 0;
        while received < rounds as usize {
            received += incoming.drain(drop);
            if received < rounds as usize {
                let waker = std::task::Waker::from(std::sync::Arc::new(ThreadWaker(
                    std::thread::current(),
                )));
                let mut context = Context::from_waker(&waker);
                let mut wait = std::pin::pin!(incoming.wait(&doorbells[1]));
                if wait.as_mut().poll(&mut context).is_pending() {
                    let parked = std::time::Instant::now();
                    std::thread::park_timeout(std::time::Duration::from_secs(10));
                    assert!(parked.elapsed().as_secs() < 10, "a wake-up was lost");
                }
            }
        }
        let wakeups = sender.join().expect("the sender finished");
        assert!(wakeups <= u64::from(rounds));
        assert_eq!(received, rounds as usize);
    }

    struct ThreadWaker(std::thread::Thread);

    impl std::task::Wake for ThreadWaker {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
}
