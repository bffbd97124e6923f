//! [`KeyedCalls`]: up to `limit` calls at once, each in its own task, where calls that share
//! a key run one at a time in the order they were submitted and calls without a key run as
//! soon as there is room.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;

use tokio::task::{self, JoinSet};

type Start<T> = Box<dyn Fn(T) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Calls in flight and the ones waiting behind a busy key.
pub(crate) struct KeyedCalls<T> {
    limit: usize,
    start: Start<T>,
    calls: JoinSet<()>,
    /// The key of each call task: a task that panics or is cancelled returns no value, but
    /// its id still frees its key.
    task_keys: HashMap<task::Id, Option<String>>,
    /// Keys with a call in flight, and the items waiting behind it, oldest first.
    busy: HashMap<String, VecDeque<T>>,
    waiting: usize,
}

impl<T: Send + 'static> KeyedCalls<T> {
    /// At most `limit` calls at once, each made by `start`.
    pub(crate) fn new<F, Fut>(limit: usize, start: F) -> Self
    where
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self {
            limit: limit.max(1),
            start: Box::new(move |item| Box::pin(start(item))),
            calls: JoinSet::new(),
            task_keys: HashMap::new(),
            busy: HashMap::new(),
            waiting: 0,
        }
    }

    /// Whether another item may be taken: fewer than `limit` calls run and fewer than `limit`
    /// wait. A full house holds back the source instead of buffering.
    pub(crate) fn has_room(&self) -> bool {
        self.calls.len() < self.limit && self.waiting < self.limit
    }

    /// Whether nothing runs or waits.
    pub(crate) fn is_idle(&self) -> bool {
        self.calls.is_empty()
    }

    /// Starts `item`'s call, or queues it behind the call of its key.
    pub(crate) fn submit(&mut self, key: Option<String>, item: T) {
        if let Some(key) = &key {
            if let Some(queue) = self.busy.get_mut(key) {
                queue.push_back(item);
                self.waiting += 1;
                return;
            }
            self.busy.insert(key.clone(), VecDeque::new());
        }
        self.spawn(key, item);
    }

    /// Waits for a call to end and starts the next one of its key. `None` when none runs.
    pub(crate) async fn join_next(&mut self) -> Option<()> {
        let finished = self.calls.join_next_with_id().await?;
        let id = match finished {
            Ok((id, ())) => id,
            Err(error) => {
                tracing::error!(error = %error, "a handler call task failed; its key goes on");
                error.id()
            }
        };
        if let Some(Some(key)) = self.task_keys.remove(&id) {
            match self.busy.get_mut(&key).and_then(VecDeque::pop_front) {
                Some(next) => {
                    self.waiting -= 1;
                    self.spawn(Some(key), next);
                }
                None => {
                    self.busy.remove(&key);
                }
            }
        }
        Some(())
    }

    /// Drops the items still waiting (their calls are not started) and returns them.
    pub(crate) fn take_waiting(&mut self) -> Vec<T> {
        self.waiting = 0;
        self.busy
            .values_mut()
            .flat_map(std::mem::take)
            .collect()
    }

    /// Waits for every call in flight to end.
    pub(crate) async fn finish(&mut self) {
        while self.calls.join_next().await.is_some() {}
    }

    fn spawn(&mut self, key: Option<String>, item: T) {
        // The id is recorded before the set is polled again, so no finished task is missed.
        let task = self.calls.spawn((self.start)(item));
        self.task_keys.insert(task.id(), key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// `(key, n, "start" | "end")` of each call.
    type CallLog = Arc<Mutex<Vec<(String, u32, &'static str)>>>;

    #[tokio::test]
    async fn one_call_per_key_at_a_time_in_order() {
        let log: CallLog = Arc::default();
        let recorded = Arc::clone(&log);
        let mut calls = KeyedCalls::new(4, move |(key, n): (String, u32)| {
            let log = Arc::clone(&recorded);
            async move {
                log.lock().unwrap().push((key.clone(), n, "start"));
                tokio::time::sleep(Duration::from_millis(5)).await;
                log.lock().unwrap().push((key, n, "end"));
            }
        });
        for n in 0..3 {
            for key in ["a", "b"] {
                calls.submit(Some(key.to_owned()), (key.to_owned(), n));
            }
        }
        while calls.join_next().await.is_some() {}
        let log = log.lock().unwrap();
        for key in ["a", "b"] {
            let events: Vec<_> = log.iter().filter(|(k, ..)| k == key).collect();
            let expected: Vec<_> = (0..3)
                .flat_map(|n| [(key.to_owned(), n, "start"), (key.to_owned(), n, "end")])
                .collect();
            let events: Vec<_> = events.into_iter().cloned().collect();
            assert_eq!(events, expected, "key {key}");
        }
    }

    #[tokio::test]
    async fn unkeyed_calls_run_side_by_side_up_to_the_limit() {
        let running = Arc::new(Mutex::new((0usize, 0usize)));
        let seen = Arc::clone(&running);
        let mut calls = KeyedCalls::new(3, move |()| {
            let running = Arc::clone(&seen);
            async move {
                {
                    let mut r = running.lock().unwrap();
                    r.0 += 1;
                    r.1 = r.1.max(r.0);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                running.lock().unwrap().0 -= 1;
            }
        });
        let mut submitted = 0;
        while submitted < 9 {
            if calls.has_room() {
                calls.submit(None, ());
                submitted += 1;
            } else {
                calls.join_next().await;
            }
        }
        calls.finish().await;
        assert_eq!(running.lock().unwrap().1, 3);
    }
}
