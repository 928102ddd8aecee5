//! This node's one writer task: commit groups under the cluster's write lock (see the module doc
//! of [`super`] for why that makes `head` safe).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use deadpool_postgres::{Object, Pool, Transaction};
use natter_core::store::{CommitBatch, CommitListener, NewMessage};
use natter_core::{Error, Event, Result};
use natter_proto::{Ack, ConversationId, DeviceId, Pos, Receipt, Role, Seq, User, UserId};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::IsolationLevel;

use super::{db_error, int, pool_error, writes};

/// Taken (transaction-scoped) by every commit group of every node before it reads `meta.pos`.
const WRITE_LOCK: i64 = 7_953_766_460_180_004_865;

/// Where a job's outcome goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T>>;

/// What the writer's queue holds: appends, which run in pipelined runs without savepoints
/// (`writes::append_run`), and every other job, which runs in a savepoint of its own.
pub(crate) enum Job {
    Append {
        message: NewMessage,
        reply: Reply<Ack>,
    },
    Op(Op),
}

impl From<Op> for Job {
    fn from(op: Op) -> Job {
        Job::Op(op)
    }
}

impl Job {
    /// Answer a job that did not run (or whose group failed before it ran) with `error`.
    fn fail(self, error: &Error) {
        match self {
            Job::Append { reply, .. } => {
                let _ = reply.send(Err(error.clone()));
            }
            Job::Op(op) => op.fail(error),
        }
    }
}

/// A write job other than an append, with the channel its caller waits on.
pub(crate) enum Op {
    CreateUser {
        username: String,
        display_name: String,
        password_hash: String,
        now_ms: u64,
        reply: Reply<User>,
    },
    SetDisabled {
        username: String,
        disabled: bool,
        reply: Reply<()>,
    },
    SetDisplayName {
        user_id: UserId,
        display_name: String,
        reply: Reply<User>,
    },
    CreateDevice {
        user_id: UserId,
        token_hash: Vec<u8>,
        name: String,
        now_ms: u64,
        reply: Reply<DeviceId>,
    },
    RevokeDevice {
        user_id: UserId,
        device_id: DeviceId,
        reply: Reply<()>,
    },
    TouchDevice {
        device_id: DeviceId,
        now_ms: u64,
        reply: Reply<()>,
    },
    CreateDirect {
        a: UserId,
        b: UserId,
        now_ms: u64,
        reply: Reply<(ConversationId, bool)>,
    },
    CreateGroup {
        owner: UserId,
        title: String,
        members: Vec<UserId>,
        now_ms: u64,
        reply: Reply<ConversationId>,
    },
    AddMembers {
        actor: UserId,
        id: ConversationId,
        users: Vec<UserId>,
        now_ms: u64,
        reply: Reply<()>,
    },
    RemoveMember {
        actor: UserId,
        id: ConversationId,
        user: UserId,
        now_ms: u64,
        reply: Reply<()>,
    },
    SetRole {
        actor: UserId,
        id: ConversationId,
        user: UserId,
        role: Role,
        now_ms: u64,
        reply: Reply<()>,
    },
    SetTitle {
        actor: UserId,
        id: ConversationId,
        title: String,
        now_ms: u64,
        reply: Reply<()>,
    },
    Mark {
        user: UserId,
        id: ConversationId,
        delivered: Option<Seq>,
        read: Option<Seq>,
        reply: Reply<Receipt>,
    },
}

impl Op {
    /// Answer a job that did not run (or whose group failed before it ran) with `error`.
    fn fail(self, error: &Error) {
        let error = error.clone();
        match self {
            Op::CreateUser { reply, .. } | Op::SetDisplayName { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Op::SetDisabled { reply, .. }
            | Op::RevokeDevice { reply, .. }
            | Op::TouchDevice { reply, .. }
            | Op::AddMembers { reply, .. }
            | Op::RemoveMember { reply, .. }
            | Op::SetRole { reply, .. }
            | Op::SetTitle { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Op::CreateDevice { reply, .. } | Op::CreateGroup { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Op::CreateDirect { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Op::Mark { reply, .. } => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

/// What a write job sees: the group's open transaction and the change stream's next position.
pub(crate) struct WriteCtx<'a> {
    pub tx: &'a Transaction<'a>,
    next_pos: Pos,
    events: Vec<Event>,
    messages: usize,
}

impl WriteCtx<'_> {
    /// Take the next position of the change stream.
    pub fn take_pos(&mut self) -> Pos {
        self.next_pos += 1;
        self.next_pos
    }

    pub fn emit(&mut self, event: Event) {
        if matches!(event, Event::Message(_)) {
            self.messages += 1;
        }
        self.events.push(event);
    }
}

/// Answers a job once its group's commit is known: `None` for committed, else the group's error.
type Finish = Box<dyn FnOnce(Option<&Error>) + Send>;

fn settle<T: Send + 'static>(result: Result<T>, reply: Reply<T>) -> (bool, Finish) {
    let ok = result.is_ok();
    let finish: Finish = Box::new(move |commit_error| {
        let _ = reply.send(match commit_error {
            Some(e) => Err(e.clone()),
            None => result,
        });
    });
    (ok, finish)
}

/// Run one job inside the group's transaction.
async fn run_op(ctx: &mut WriteCtx<'_>, op: Op) -> (bool, Finish) {
    match op {
        Op::CreateUser {
            username,
            display_name,
            password_hash,
            now_ms,
            reply,
        } => settle(
            writes::create_user(ctx, &username, &display_name, &password_hash, now_ms).await,
            reply,
        ),
        Op::SetDisabled {
            username,
            disabled,
            reply,
        } => settle(
            writes::set_user_disabled(ctx, &username, disabled).await,
            reply,
        ),
        Op::SetDisplayName {
            user_id,
            display_name,
            reply,
        } => settle(
            writes::set_display_name(ctx, user_id, &display_name).await,
            reply,
        ),
        Op::CreateDevice {
            user_id,
            token_hash,
            name,
            now_ms,
            reply,
        } => settle(
            writes::create_device(ctx, user_id, &token_hash, &name, now_ms).await,
            reply,
        ),
        Op::RevokeDevice {
            user_id,
            device_id,
            reply,
        } => settle(writes::revoke_device(ctx, user_id, device_id).await, reply),
        Op::TouchDevice {
            device_id,
            now_ms,
            reply,
        } => settle(writes::touch_device(ctx, device_id, now_ms).await, reply),
        Op::CreateDirect {
            a,
            b,
            now_ms,
            reply,
        } => settle(writes::create_direct(ctx, a, b, now_ms).await, reply),
        Op::CreateGroup {
            owner,
            title,
            members,
            now_ms,
            reply,
        } => settle(
            writes::create_group(ctx, owner, &title, &members, now_ms).await,
            reply,
        ),
        Op::AddMembers {
            actor,
            id,
            users,
            now_ms,
            reply,
        } => settle(
            writes::add_members(ctx, actor, id, &users, now_ms).await,
            reply,
        ),
        Op::RemoveMember {
            actor,
            id,
            user,
            now_ms,
            reply,
        } => settle(
            writes::remove_member(ctx, actor, id, user, now_ms).await,
            reply,
        ),
        Op::SetRole {
            actor,
            id,
            user,
            role,
            now_ms,
            reply,
        } => settle(
            writes::set_role(ctx, actor, id, user, role, now_ms).await,
            reply,
        ),
        Op::SetTitle {
            actor,
            id,
            title,
            now_ms,
            reply,
        } => settle(
            writes::set_title(ctx, actor, id, &title, now_ms).await,
            reply,
        ),
        Op::Mark {
            user,
            id,
            delivered,
            read,
            reply,
        } => settle(writes::mark(ctx, user, id, delivered, read).await, reply),
    }
}

/// The writer: one commit group at a time, on one connection it replaces whenever a group fails.
pub(crate) async fn run(
    pool: Pool,
    mut queue: mpsc::Receiver<Job>,
    listener: Arc<OnceLock<CommitListener>>,
    group_max: usize,
) {
    let mut kept: Option<Object> = None;
    let mut batch: Vec<Job> = Vec::with_capacity(group_max);
    while queue.recv_many(&mut batch, group_max).await > 0 {
        let started = Instant::now();
        let mut conn = match kept.take() {
            Some(conn) if !conn.is_closed() => conn,
            stale => {
                if let Some(conn) = stale {
                    // Out of the pool for good, so that the next `get` connects anew.
                    drop(Object::take(conn));
                }
                match pool.get().await {
                    Ok(conn) => conn,
                    Err(e) => {
                        let error = pool_error(e);
                        for job in batch.drain(..) {
                            job.fail(&error);
                        }
                        continue;
                    }
                }
            }
        };
        let (finishes, outcome) = commit_group(&mut conn, &mut batch).await;
        match outcome {
            Ok((events, messages)) => {
                kept = Some(conn);
                // Answers first: a sender's ack resolves before its own message event is queued
                // on its connection (see `natter_server::gateway::ws`).
                for finish in finishes {
                    finish(None);
                }
                if let Some(listener) = listener.get() {
                    listener(CommitBatch {
                        events,
                        messages,
                        duration: started.elapsed(),
                    });
                }
            }
            Err(error) => {
                // Whatever went wrong, the next group starts on a fresh connection.
                drop(Object::take(conn));
                for finish in finishes {
                    finish(Some(&error));
                }
            }
        }
    }
}

type GroupOutcome = Result<(Vec<Event>, usize)>;

/// Take the cluster's write lock, then (in a later statement, with a newer snapshot) read the
/// position of the last committed change.
async fn lock_and_read_pos(tx: &Transaction<'_>) -> Result<Pos> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
        .await
        .map_err(db_error)?;
    let pos: i64 = tx
        .query_one("SELECT value FROM meta WHERE key = 'pos'", &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(db_error)?;
    Pos::try_from(pos).map_err(|_| Error::internal(format!("stored position {pos} is negative")))
}

/// Run the batch in one transaction. Every job is either answered already (it never ran) or has
/// its `Finish` returned, to be called once the outcome of the commit is known.
async fn commit_group(conn: &mut Object, batch: &mut Vec<Job>) -> (Vec<Finish>, GroupOutcome) {
    let mut finishes = Vec::with_capacity(batch.len());
    let fail_all = |batch: &mut Vec<Job>, error: Error| {
        for job in batch.drain(..) {
            job.fail(&error);
        }
        error
    };
    // READ COMMITTED whatever the database's default: each statement must see what committed
    // before it, which is what makes reading `meta.pos` after taking the lock correct.
    let tx = match conn
        .build_transaction()
        .isolation_level(IsolationLevel::ReadCommitted)
        .start()
        .await
    {
        Ok(tx) => tx,
        Err(e) => return (finishes, Err(fail_all(batch, db_error(e)))),
    };
    let committed_pos = match lock_and_read_pos(&tx).await {
        Ok(pos) => pos,
        Err(error) => return (finishes, Err(fail_all(batch, error))),
    };
    let mut ctx = WriteCtx {
        tx: &tx,
        next_pos: committed_pos,
        events: Vec::new(),
        messages: 0,
    };
    // Appends run in pipelined runs without savepoints (`writes::append_run`); every other job
    // runs in a savepoint of its own, so that one failure does not undo the others. A savepoint
    // is opened together with the previous job's release where one follows another.
    let mut savepoint_open = false;
    let mut jobs = batch.drain(..).peekable();
    while let Some(job) = jobs.next() {
        let op = match job {
            Job::Op(op) => op,
            Job::Append { message, reply } => {
                let mut run = vec![message];
                let mut replies = vec![reply];
                while let Some(Job::Append { .. }) = jobs.peek() {
                    if let Some(Job::Append { message, reply }) = jobs.next() {
                        run.push(message);
                        replies.push(reply);
                    }
                }
                match writes::append_run(&mut ctx, run).await {
                    Ok(outcomes) => {
                        for (outcome, reply) in outcomes.into_iter().zip(replies) {
                            finishes.push(settle(outcome, reply).1);
                        }
                    }
                    Err(error) => {
                        for reply in replies {
                            let _ = reply.send(Err(error.clone()));
                        }
                        for job in jobs {
                            job.fail(&error);
                        }
                        return (finishes, Err(error));
                    }
                }
                continue;
            }
        };
        if !savepoint_open && let Err(e) = tx.batch_execute("SAVEPOINT job").await {
            let error = db_error(e);
            op.fail(&error);
            for job in jobs {
                job.fail(&error);
            }
            return (finishes, Err(error));
        }
        let saved = (ctx.next_pos, ctx.events.len(), ctx.messages);
        let (ok, finish) = run_op(&mut ctx, op).await;
        finishes.push(finish);
        let close = if ok {
            "RELEASE SAVEPOINT job"
        } else {
            ctx.next_pos = saved.0;
            ctx.events.truncate(saved.1);
            ctx.messages = saved.2;
            "ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job"
        };
        // One round trip closes this job's savepoint and opens the next one's.
        savepoint_open = matches!(jobs.peek(), Some(Job::Op(_)));
        let sql = if savepoint_open {
            format!("{close}; SAVEPOINT job")
        } else {
            close.to_string()
        };
        if let Err(e) = tx.batch_execute(&sql).await {
            let error = db_error(e);
            for job in jobs {
                job.fail(&error);
            }
            return (finishes, Err(error));
        }
    }
    let WriteCtx {
        next_pos,
        events,
        messages,
        ..
    } = ctx;
    // A transaction that an error had aborted would fail this update (a COMMIT of an aborted
    // transaction rolls back without an error): its success means the commit below is real.
    let updated = tx
        .execute(
            "UPDATE meta SET value = $1 WHERE key = 'pos'",
            &[&int(next_pos)],
        )
        .await;
    let outcome = match updated {
        Ok(1) => tx.commit().await.map_err(db_error),
        Ok(n) => Err(Error::internal(format!(
            "the position row is missing ({n} rows updated)"
        ))),
        Err(e) => Err(db_error(e)),
    };
    (finishes, outcome.map(|()| (events, messages)))
}
