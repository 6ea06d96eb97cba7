//! The outbox between the flush and the sender: closed batches wait here
//! until a collector acknowledges them.
//!
//! [`Outbox`] is the contract; [`MemoryQueue`] keeps batches in memory up to a
//! byte budget and, when full, drops the oldest batch and counts it. The disk
//! spool implements the same contract, so the sender does not change when it
//! arrives.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;
use vigil_shared::proto::PushRequest;

/// One closed window, ready to send.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The batch's sequence number.
    pub sequence: u64,
    /// What is sent.
    pub request: PushRequest,
    /// Its encoded size in bytes.
    pub encoded_len: usize,
}

impl Batch {
    /// Wraps a request, measuring its encoded size.
    pub fn new(request: PushRequest) -> Self {
        let encoded_len = prost::Message::encoded_len(&request);
        Self {
            sequence: request.sequence,
            request,
            encoded_len,
        }
    }
}

/// Where batches wait for acknowledgement. Oldest first.
pub trait Outbox: Send + Sync {
    /// Adds a batch; may drop older ones to stay within budget (counted).
    fn enqueue(&self, batch: Batch);
    /// The oldest batch not yet acknowledged or discarded.
    fn oldest(&self) -> Option<Batch>;
    /// The collector has made `sequence` durable: forget it.
    fn acknowledge(&self, sequence: u64);
    /// `sequence` will never be accepted: forget it (the caller counts why).
    fn discard(&self, sequence: u64);
    /// Resolves when a batch may be waiting.
    fn notified(&self) -> tokio::sync::futures::Notified<'_>;
    /// Batches waiting.
    fn len(&self) -> usize;
    /// True when nothing waits.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes waiting.
    fn bytes(&self) -> u64;
    /// Batches dropped to stay within budget, since start.
    fn dropped(&self) -> u64;
}

/// A bounded in-memory outbox.
pub struct MemoryQueue {
    batches: Mutex<VecDeque<Batch>>,
    bytes: AtomicU64,
    max_bytes: u64,
    dropped: AtomicU64,
    notify: Notify,
}

impl MemoryQueue {
    /// A queue that holds at most `max_bytes` of encoded batches.
    pub fn new(max_bytes: u64) -> Self {
        Self {
            batches: Mutex::new(VecDeque::new()),
            bytes: AtomicU64::new(0),
            max_bytes,
            dropped: AtomicU64::new(0),
            notify: Notify::new(),
        }
    }

    /// The queue; a panic elsewhere while it was held leaves it usable.
    fn batches(&self) -> std::sync::MutexGuard<'_, VecDeque<Batch>> {
        self.batches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remove(&self, sequence: u64) {
        let mut batches = self.batches();
        if let Some(i) = batches.iter().position(|b| b.sequence == sequence)
            && let Some(b) = batches.remove(i)
        {
            self.bytes
                .fetch_sub(b.encoded_len as u64, Ordering::Relaxed);
        }
    }
}

impl Outbox for MemoryQueue {
    fn enqueue(&self, batch: Batch) {
        let mut batches = self.batches();
        let mut bytes = self.bytes.load(Ordering::Relaxed) + batch.encoded_len as u64;
        while bytes > self.max_bytes {
            match batches.pop_front() {
                Some(old) => {
                    bytes -= old.encoded_len as u64;
                    let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    // Log the first drop and then every hundredth, not each one.
                    if dropped == 1 || dropped.is_multiple_of(100) {
                        tracing::warn!(
                            sequence = old.sequence,
                            dropped_total = dropped,
                            max_bytes = self.max_bytes,
                            "outbox full: dropped the oldest batch"
                        );
                    }
                }
                None => break,
            }
        }
        self.bytes.store(bytes, Ordering::Relaxed);
        batches.push_back(batch);
        drop(batches);
        self.notify.notify_one();
    }

    fn oldest(&self) -> Option<Batch> {
        self.batches().front().cloned()
    }

    fn acknowledge(&self, sequence: u64) {
        self.remove(sequence);
    }

    fn discard(&self, sequence: u64) {
        self.remove(sequence);
    }

    fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    fn len(&self) -> usize {
        self.batches().len()
    }

    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(sequence: u64, payload: usize) -> Batch {
        Batch::new(PushRequest {
            agent_id: "x".repeat(payload),
            sequence,
            ..Default::default()
        })
    }

    #[test]
    fn full_queue_drops_oldest_first_and_counts() {
        let one = batch(1, 1000).encoded_len as u64;
        let q = MemoryQueue::new(one * 3);
        for s in 1..=5 {
            q.enqueue(batch(s, 1000));
        }
        assert_eq!(q.len(), 3);
        assert_eq!(q.dropped(), 2);
        assert_eq!(q.oldest().map(|b| b.sequence), Some(3));
        assert!(q.bytes() <= one * 3);
    }

    #[test]
    fn acknowledged_batches_leave_in_order() {
        let q = MemoryQueue::new(1 << 20);
        q.enqueue(batch(7, 10));
        q.enqueue(batch(8, 10));
        q.acknowledge(7);
        assert_eq!(q.oldest().map(|b| b.sequence), Some(8));
        q.discard(8);
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
        // Acknowledging what is gone (dropped meanwhile) is harmless.
        q.acknowledge(8);
    }
}
