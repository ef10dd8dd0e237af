//! The session writer: placements and session ends, many to a transaction.
//!
//! Each placement or end is one statement ([`super::usage`]). Run one transaction each,
//! every one pays for its own commit and the backends fight over the same usage rows; so a
//! writer task takes every operation queued while the previous transaction ran and sends
//! them, pipelined, in one transaction: each statement sees the ones before it, so capacity
//! is checked exactly as if they ran one by one, and one commit (one WAL flush) answers them
//! all. While one transaction waits for its commit, the next runs its statements.
//!
//! The ends of a batch run first, in the order of their hosts, then its placements in the
//! order they were queued. An end waits for its host's row, a placement first takes only
//! rows no one holds (`SKIP LOCKED`): so the transactions of several processes sharing the
//! database take the rows they wait for in one order, and do not deadlock (the ends queued
//! with a placement were asked for at the same time, so either order is one they could
//! have run in).
//!
//! After a failure a retry can mend (a lost connection, a serialization failure) the same
//! operations run again, each first looking for what an earlier attempt did (the commit may
//! have happened with its answer lost); if the database refuses the transaction, each
//! operation runs alone, so one operation's error is its own.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use tokio::sync::{Notify, Semaphore, oneshot};

use super::retry::{Failure, retrying};
use super::usage::{Ended, Ending, Placed, Placement};

/// At most this many operations to a transaction.
const MAX_BATCH: usize = 256;

pub enum Op {
    Place(Placement),
    End(Ending),
}

pub enum Done {
    Placed(Option<Placed>),
    Ended(Ended),
}

struct Queued {
    op: Op,
    reply: oneshot::Sender<Result<Done, String>>,
}

pub struct SessionWriter {
    /// A std `Mutex`: held to queue or take operations, never across an `.await`.
    queue: Mutex<Vec<Queued>>,
    wake: Notify,
}

/// Transactions that may wait for their commit at once: the next batch runs its statements
/// while the one before waits for its WAL flush.
const COMMITS_IN_FLIGHT: usize = 2;

impl SessionWriter {
    pub fn new() -> SessionWriter {
        SessionWriter {
            queue: Mutex::new(Vec::new()),
            wake: Notify::new(),
        }
    }

    /// Queue `op` and wait until the transaction that carries it has committed.
    pub async fn submit(&self, op: Op) -> Result<Done, String> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Queued { op, reply });
        self.wake.notify_one();
        answer
            .await
            .map_err(|_| "the session writer stopped".to_string())?
    }

    /// The writer, until the task is aborted: takes what is queued and runs its statements
    /// in one transaction, then leaves the commit (and the answers) to a task of its own and
    /// goes on with the next batch. A batch starts only once the one before has run all its
    /// statements, so it may wait for rows the one before holds but never the other way
    /// round: the two cannot deadlock.
    pub async fn run(&self, pool: deadpool_postgres::Pool, database: String) {
        let commits = Arc::new(Semaphore::new(COMMITS_IN_FLIGHT));
        loop {
            self.wake.notified().await;
            loop {
                let batch: Vec<Queued> = {
                    let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                    let take = queue.len().min(MAX_BATCH);
                    queue.drain(..take).collect()
                };
                if batch.is_empty() {
                    break;
                }
                let (ops, replies): (Vec<Op>, Vec<_>) =
                    batch.into_iter().map(|q| (q.op, q.reply)).unzip();
                let permit = commits
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed");
                let executed = execute(&pool, &ops, false).await;
                let (pool, database) = (pool.clone(), database.clone());
                tokio::spawn(async move {
                    let results = match executed {
                        Ok((client, done)) => match commit(client).await {
                            Ok(()) => done.into_iter().map(Ok).collect(),
                            // The commit may have happened: look before doing again.
                            Err(_) => write(&pool, &ops, &database, true).await,
                        },
                        Err(_) => write(&pool, &ops, &database, false).await,
                    };
                    drop(permit);
                    for (reply, result) in replies.into_iter().zip(results) {
                        // The caller may have gone (its request was cancelled): nothing to
                        // undo, the broker's view learns of the session at the next start.
                        let _ = reply.send(result);
                    }
                });
            }
        }
    }
}

/// Commit `ops` together, retrying what a retry can mend (after an attempt that may have
/// committed, `repeated`, each placement first looks for its session); if the database
/// refuses them, each alone.
async fn write(
    pool: &deadpool_postgres::Pool,
    ops: &[Op],
    database: &str,
    repeated: bool,
) -> Vec<Result<Done, String>> {
    let what = if ops.len() == 1 {
        "a placement or session end".to_string()
    } else {
        format!("{} placements and session ends", ops.len())
    };
    let mut attempts = 0;
    let together = retrying(database, &what, || {
        attempts += 1;
        run(pool, ops, repeated || attempts > 1)
    })
    .await;
    match together {
        Ok(done) => done.into_iter().map(Ok).collect(),
        Err(error) if ops.len() == 1 => vec![Err(error)],
        Err(_) => {
            let mut results = Vec::with_capacity(ops.len());
            for op in ops {
                let mut attempts = 0;
                let alone = retrying(database, "a placement or session end", || {
                    attempts += 1;
                    run(pool, std::slice::from_ref(op), attempts > 1)
                })
                .await;
                results.push(alone.map(|mut done| done.remove(0)));
            }
            results
        }
    }
}

/// `ops` in one transaction, committed.
async fn run(
    pool: &deadpool_postgres::Pool,
    ops: &[Op],
    repeated: bool,
) -> Result<Vec<Done>, Failure> {
    let (client, done) = execute(pool, ops, repeated).await?;
    commit(client).await?;
    Ok(done)
}

/// Open a transaction and run the statements of `ops` in it, pipelined, in order; answers
/// the connection with the transaction open. On an error the connection is dropped (not
/// given back to the pool with a transaction open), which rolls the transaction back.
async fn execute(
    pool: &deadpool_postgres::Pool,
    ops: &[Op],
    repeated: bool,
) -> Result<(deadpool_postgres::Object, Vec<Done>), Failure> {
    let client = pool.get().await?;
    match statements(&client, ops, repeated).await {
        Ok(done) => Ok((client, done)),
        Err(error) => {
            drop(deadpool_postgres::Object::take(client));
            Err(error.into())
        }
    }
}

async fn commit(client: deadpool_postgres::Object) -> Result<(), Failure> {
    match client.batch_execute("COMMIT").await {
        Ok(()) => Ok(()),
        Err(error) => {
            drop(deadpool_postgres::Object::take(client));
            Err(error.into())
        }
    }
}

async fn statements(
    client: &deadpool_postgres::ClientWrapper,
    ops: &[Op],
    repeated: bool,
) -> Result<Vec<Done>, tokio_postgres::Error> {
    // The usage table is small and its rows are rewritten by every placement, so the
    // planner's estimates favour scanning it whole; each statement touches a few rows by
    // key. And each statement is planned once per connection: left to choose, PostgreSQL
    // planned every placement afresh once the fleet passed a few thousand hosts (13 % of
    // the CPU at 10,000); the rows are found by key whatever the parameters, so one plan
    // serves every placement.
    // Sent ahead of the statements, in the same round trip.
    let begin = client.batch_execute(
        "BEGIN; SET LOCAL enable_seqscan = off; SET LOCAL plan_cache_mode = force_generic_plan",
    );
    // Ends first, by host; then placements, as queued.
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by_key(|&i| match &ops[i] {
        Op::End(ending) => (0, Some(ending.host), i),
        Op::Place(_) => (1, None, i),
    });
    let first = join_all(order.iter().map(|&i| &ops[i]).map(|op| async {
        Ok::<_, tokio_postgres::Error>(match op {
            Op::Place(placement) => {
                let found = match repeated {
                    true => placement.find(client).await?,
                    false => None,
                };
                match found {
                    Some(placed) => Done::Placed(Some(placed)),
                    None => Done::Placed(placement.try_once(client, false).await?),
                }
            }
            Op::End(ending) => {
                let mut ended = ending.run(client).await?;
                // After an attempt that may have committed, a session no longer there was
                // ended by it (or by another end meanwhile: gone either way, as asked).
                ended.existed |= repeated;
                Done::Ended(ended)
            }
        })
    }));
    let (begun, first) = join(begin, first).await;
    begun?;
    let mut done: Vec<Option<Done>> = (0..ops.len()).map(|_| None).collect();
    for (i, result) in order.into_iter().zip(first) {
        done[i] = Some(result?);
    }
    let mut done: Vec<Done> = done.into_iter().map(|d| d.expect("every op ran")).collect();
    // Placements that found every offer with room held by another transaction: wait for
    // those rows, then check them again.
    let again: Vec<(usize, &Placement)> = ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| match (op, &done[i]) {
            (Op::Place(placement), Done::Placed(None)) => Some((i, placement)),
            _ => None,
        })
        .collect();
    let waited = join_all(
        again
            .iter()
            .map(|(_, placement)| placement.try_once(client, true)),
    )
    .await;
    for ((i, _), placed) in again.iter().zip(waited) {
        done[*i] = Done::Placed(placed?);
    }
    Ok(done)
}

/// Run `a` and `b` concurrently, `a` polled first.
async fn join<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    let (mut a_out, mut b_out) = (None, None);
    std::future::poll_fn(|context| {
        if a_out.is_none()
            && let Poll::Ready(value) = a.as_mut().poll(context)
        {
            a_out = Some(value);
        }
        if b_out.is_none()
            && let Poll::Ready(value) = b.as_mut().poll(context)
        {
            b_out = Some(value);
        }
        match (a_out.is_some(), b_out.is_some()) {
            (true, true) => Poll::Ready(()),
            _ => Poll::Pending,
        }
    })
    .await;
    (a_out.expect("finished"), b_out.expect("finished"))
}

/// Run `futures` concurrently (on one connection: their statements are pipelined) and
/// answer their outputs in order.
async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|context| {
        let mut waiting = false;
        for (future, output) in pending.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(context) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => waiting = true,
                }
            }
        }
        if waiting {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|output| output.expect("every future finished"))
        .collect()
}
