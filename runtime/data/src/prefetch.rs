//! `Prefetch`: loads batches on worker threads ahead of training, in request order.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::error::DataError;
use crate::rng::Rng;
use crate::{Dataset, Sample};

/// One batch to load: sample `indices[k]` at `res x res`, augmented from
/// `Rng::new(seeds[k])`, so a batch is the same whichever thread loads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchRequest {
    pub indices: Vec<usize>,
    pub seeds: Vec<u64>,
    pub res: usize,
}

type Batch = Result<Vec<Sample>, DataError>;
type Jobs = Box<dyn Iterator<Item = BatchRequest> + Send>;

/// Yields the requested batches in order, loaded by `workers` threads with at most
/// `depth` batches loaded or loading ahead of the consumer. Dropping it stops the
/// workers (a batch being loaded is finished, then they exit).
pub struct Prefetch {
    results: Receiver<(usize, Batch)>,
    /// Returns a slot to the workers once a batch has been handed out.
    slots: Option<SyncSender<()>>,
    workers: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    pending: BTreeMap<usize, Batch>,
    next: usize,
}

fn load(ds: &dyn Dataset, req: &BatchRequest) -> Batch {
    if req.indices.len() != req.seeds.len() {
        return Err(DataError::Loader(format!(
            "a batch request with {} indices and {} seeds",
            req.indices.len(),
            req.seeds.len()
        )));
    }
    req.indices
        .iter()
        .zip(&req.seeds)
        .map(|(&i, &s)| ds.get(i, req.res, &mut Rng::new(s)))
        .collect()
}

impl Prefetch {
    pub fn new<I>(ds: Arc<dyn Dataset>, workers: usize, depth: usize, requests: I) -> Prefetch
    where
        I: IntoIterator<Item = BatchRequest>,
        I::IntoIter: Send + 'static,
    {
        let depth = depth.max(1);
        let (slot_tx, slot_rx) = sync_channel::<()>(depth);
        for _ in 0..depth {
            // Cannot fail: the channel holds `depth` and its receiver is alive.
            let _ = slot_tx.try_send(());
        }
        let slot_rx = Arc::new(Mutex::new(slot_rx));
        // Jobs are numbered as they are taken, under one lock, so the numbers follow the
        // request order.
        let jobs: Arc<Mutex<(Jobs, usize)>> =
            Arc::new(Mutex::new((Box::new(requests.into_iter()), 0)));
        let (res_tx, res_rx) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..workers.max(1))
            .map(|_| {
                let (ds, jobs, slot_rx, res_tx, stop) = (
                    ds.clone(),
                    jobs.clone(),
                    slot_rx.clone(),
                    res_tx.clone(),
                    stop.clone(),
                );
                std::thread::spawn(move || loop {
                    // Wait for room; a closed channel means the consumer is gone.
                    let got = match slot_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    if got.is_err() || stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let job = match jobs.lock() {
                        Ok(mut j) => {
                            let next = j.0.next();
                            let seq = j.1;
                            j.1 += 1;
                            next.map(|r| (seq, r))
                        }
                        Err(_) => return,
                    };
                    let Some((seq, req)) = job else {
                        return;
                    };
                    let batch = catch_unwind(AssertUnwindSafe(|| load(ds.as_ref(), &req)))
                        .unwrap_or_else(|_| {
                            Err(DataError::Loader(format!(
                                "a worker panicked loading batch {seq}"
                            )))
                        });
                    if res_tx.send((seq, batch)).is_err() {
                        return;
                    }
                })
            })
            .collect();
        Prefetch {
            results: res_rx,
            slots: Some(slot_tx),
            workers,
            stop,
            pending: BTreeMap::new(),
            next: 0,
        }
    }
}

impl Iterator for Prefetch {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        loop {
            if let Some(b) = self.pending.remove(&self.next) {
                self.next += 1;
                if let Some(tx) = &self.slots {
                    let _ = tx.try_send(());
                }
                return Some(b);
            }
            // All workers gone and nothing buffered: the requests are done.
            let (seq, b) = self.results.recv().ok()?;
            self.pending.insert(seq, b);
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // Closing the slot channel wakes every worker waiting for room; one busy with a
        // batch finds the results channel closed or the slots closed on its next turn.
        self.stop.store(true, Ordering::SeqCst);
        self.slots = None;
        let (_, dead) = channel();
        self.results = dead;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::SyntheticShapes;
    use crate::Split;

    fn requests(n: usize) -> Vec<BatchRequest> {
        (0..n)
            .map(|b| BatchRequest {
                indices: (0..4).map(|k| (b * 7 + k * 3) % 50).collect(),
                seeds: (0..4).map(|k| (b * 4 + k) as u64).collect(),
                res: 16 + 8 * (b % 2),
            })
            .collect()
    }

    fn ds() -> Arc<dyn Dataset> {
        Arc::new(SyntheticShapes::new(50, 1, 8, 0.0, Split::Train).unwrap())
    }

    #[test]
    fn same_batches_in_order_whatever_the_threads() {
        let one: Vec<Vec<Sample>> = Prefetch::new(ds(), 1, 2, requests(12))
            .map(Result::unwrap)
            .collect();
        let three: Vec<Vec<Sample>> = Prefetch::new(ds(), 3, 4, requests(12))
            .map(Result::unwrap)
            .collect();
        assert_eq!(one.len(), 12);
        assert_eq!(one, three);
        let d = ds();
        for (b, req) in requests(12).iter().enumerate() {
            let direct = load(d.as_ref(), req).unwrap();
            assert_eq!(direct, one[b]);
            assert_eq!(one[b][0].height, req.res);
        }
    }

    #[test]
    fn errors_arrive_in_place_and_dropping_stops_the_workers() {
        let mut reqs = requests(3);
        reqs[1].indices[0] = 999;
        reqs[2].seeds.pop();
        let out: Vec<Batch> = Prefetch::new(ds(), 2, 2, reqs).collect();
        assert!(out[0].is_ok());
        assert!(matches!(
            out[1],
            Err(DataError::OutOfRange { idx: 999, .. })
        ));
        assert!(matches!(out[2], Err(DataError::Loader(_))));
        // An endless stream: take a few, then drop; this must return.
        let endless = (0..).map(|b| BatchRequest {
            indices: vec![b % 50],
            seeds: vec![b as u64],
            res: 8,
        });
        let mut p = Prefetch::new(ds(), 3, 2, endless);
        assert!(p.next().unwrap().is_ok());
        assert!(p.next().unwrap().is_ok());
        drop(p);
    }
}
