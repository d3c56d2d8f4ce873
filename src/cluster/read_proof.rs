//! A leader's own reads confirmed by its followers' ReadIndex requests instead of a ReadIndex
//! round (heartbeats).
//!
//! The leader numbers every ReadIndex answer it sends ([`ReadIndexStamp`]: this process's
//! random `leader` id and a sequence number). A follower keeps the latest stamp it received and
//! sends it back with its next request, read *before* the vote that request carries. So when a
//! request arrives with stamp `s`, the follower read its vote after it received answer `s`, and
//! answer `s` was sent after every stamp below it was handed out.
//!
//! A read on the leader takes a mark (the last stamp handed out) after it arrived. A request
//! whose stamp is above the mark was therefore built from a vote read after the read arrived.
//! If that request confirms the leader by itself (`Cluster::answer_read_index`: the vote is the
//! leader's own, the two members make a quorum, the leader has committed in its term), the
//! interval from the read's arrival to the check is covered exactly as a heartbeat round would
//! cover it: both members held the leader's term throughout, and a leader of any later term needs
//! one of their votes. The commit index read at that check answers the read.
//!
//! A stamp of another process (a new leader, or this member restarted) is never compared with
//! this one's marks: its `leader` differs. A leader waits for such a request only while
//! followers are sending them ([`FRESH`]), and at most [`WAIT`]; otherwise, and when the wait
//! runs out, the read joins a ReadIndex round (heartbeats) as before. Each read waits on its own,
//! so a read that arrives while another waits does not queue behind it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::peer::ReadIndexStamp;

/// A leader waits for a follower's request only if one confirmed it this recently: followers
/// under load send one every fraction of a millisecond, an idle one none.
pub const FRESH: Duration = Duration::from_millis(2);
/// How long a read on the leader waits for a follower's request before it joins a round.
pub const WAIT: Duration = Duration::from_millis(2);

/// The stamps of one member: handed out as leader, kept as follower.
pub struct ReadProofs {
    /// This process's id in every stamp it hands out.
    leader: u64,
    /// The last sequence number handed out.
    handed_out: AtomicU64,
    /// The highest stamp of this process that came back on a request confirming this leader,
    /// with the commit index read at that check.
    confirmed: watch::Sender<Confirmed>,
    /// Microseconds since `started` of the last such request.
    last_confirmed_us: AtomicU64,
    /// [`FRESH`] and [`WAIT`], longer in tests that must not depend on how fast they run.
    fresh: Duration,
    wait: Duration,
    started: Instant,
    /// As follower: the latest stamp received from the leader.
    seen: Mutex<Option<ReadIndexStamp>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Confirmed {
    seq: u64,
    index: u64,
}

impl Default for ReadProofs {
    fn default() -> Self {
        ReadProofs::new(uuid::Uuid::new_v4().as_u64_pair().0)
    }
}

impl ReadProofs {
    fn new(leader: u64) -> Self {
        ReadProofs {
            leader,
            handed_out: AtomicU64::new(0),
            confirmed: watch::Sender::new(Confirmed::default()),
            last_confirmed_us: AtomicU64::new(u64::MAX),
            fresh: FRESH,
            wait: WAIT,
            started: Instant::now(),
            seen: Mutex::new(None),
        }
    }

    /// As leader: the stamp of an answer about to be sent.
    pub fn stamp(&self) -> ReadIndexStamp {
        ReadIndexStamp {
            leader: self.leader,
            seq: self.handed_out.fetch_add(1, Ordering::SeqCst) + 1,
        }
    }

    /// As leader, once a follower's request carrying `stamp` confirmed this leader by itself
    /// with commit index `index`: answers every read whose mark is below the stamp.
    pub fn confirmed(&self, stamp: ReadIndexStamp, index: u64) {
        if stamp.leader != self.leader {
            return;
        }
        let now = self.started.elapsed().as_micros() as u64;
        self.last_confirmed_us.store(now, Ordering::Relaxed);
        self.confirmed.send_if_modified(|c| {
            let newer = stamp.seq > c.seq;
            if newer {
                *c = Confirmed {
                    seq: stamp.seq,
                    index: index.max(c.index),
                };
            }
            newer
        });
    }

    /// As leader, after a read arrived: the mark a confirming request's stamp must be above.
    pub fn mark(&self) -> u64 {
        self.handed_out.load(Ordering::SeqCst)
    }

    /// As leader: a commit index confirmed by a follower's request stamped above `mark`, if one
    /// comes within [`WAIT`] and followers have been sending them; `None` means join a ReadIndex
    /// round.
    pub async fn confirmed_after(&self, mark: u64) -> Option<u64> {
        // Every read on every member asks: a member never confirmed as leader reads no clock.
        let last = self.last_confirmed_us.load(Ordering::Relaxed);
        if last == u64::MAX {
            return None;
        }
        let now = self.started.elapsed().as_micros() as u64;
        if now.saturating_sub(last) > self.fresh.as_micros() as u64 {
            return None;
        }
        let mut rx = self.confirmed.subscribe();
        let found = tokio::time::timeout(self.wait, rx.wait_for(|c| c.seq > mark)).await;
        match found {
            Ok(Ok(c)) => Some(c.index),
            _ => None,
        }
    }

    /// As follower: keeps the stamp of an answer received from the leader.
    pub fn saw(&self, stamp: ReadIndexStamp) {
        let mut seen = self.seen.lock().expect("never poisoned");
        let newer = match *seen {
            Some(s) => s.leader != stamp.leader || stamp.seq > s.seq,
            None => true,
        };
        if newer {
            *seen = Some(stamp);
        }
    }

    /// As follower: the latest stamp received, to send back with the next request (read before
    /// the vote that request carries).
    pub fn seen(&self) -> Option<ReadIndexStamp> {
        *self.seen.lock().expect("never poisoned")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::FutureExt;

    use super::*;

    /// A leader whose followers have confirmed it, and who counts that as recent for a minute
    /// (so that no test depends on how fast it runs).
    fn active_leader() -> ReadProofs {
        let p = ReadProofs {
            fresh: Duration::from_secs(60),
            ..ReadProofs::new(7)
        };
        let s = p.stamp();
        p.confirmed(s, 1);
        p
    }

    #[tokio::test]
    async fn a_read_is_answered_by_a_request_stamped_after_its_mark_only() {
        let p = Arc::new(ReadProofs {
            wait: Duration::from_secs(60),
            ..active_leader()
        });
        let mark = p.mark();
        let before = ReadIndexStamp {
            leader: 7,
            seq: mark,
        };
        let waiter = tokio::spawn({
            let p = p.clone();
            async move { p.confirmed_after(mark).await }
        });
        tokio::task::yield_now().await;
        // A request carrying a stamp handed out before the mark proves nothing about the read.
        p.confirmed(before, 5);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let after = p.stamp();
        p.confirmed(after, 9);
        assert_eq!(waiter.await.unwrap(), Some(9));
    }

    #[tokio::test]
    async fn a_stamp_of_another_leader_proves_nothing() {
        let p = active_leader();
        let mark = p.mark();
        p.confirmed(
            ReadIndexStamp {
                leader: 8,
                seq: mark + 100,
            },
            9,
        );
        assert_eq!(p.confirmed_after(mark).await, None);
    }

    #[tokio::test]
    async fn a_read_waits_at_most_wait_and_not_at_all_when_followers_are_quiet() {
        let p = active_leader();
        let t = Instant::now();
        assert_eq!(p.confirmed_after(p.mark()).await, None);
        assert!(t.elapsed() >= WAIT, "gave up after {:?}", t.elapsed());

        // No follower ever confirmed this leader: the answer is there at the first poll.
        let quiet = ReadProofs::new(7);
        assert_eq!(
            quiet.confirmed_after(quiet.mark()).now_or_never(),
            Some(None)
        );
        // Followers confirmed it, but longer ago than `fresh`: the same.
        let gone_quiet = ReadProofs {
            fresh: Duration::from_micros(1),
            ..active_leader()
        };
        std::thread::sleep(Duration::from_millis(1));
        assert_eq!(
            gone_quiet.confirmed_after(gone_quiet.mark()).now_or_never(),
            Some(None)
        );
        // While they confirm it, a read waits.
        assert_eq!(p.confirmed_after(p.mark()).now_or_never(), None);
    }

    #[test]
    fn a_follower_keeps_the_latest_stamp_of_the_current_leader() {
        let p = ReadProofs::new(1);
        assert_eq!(p.seen(), None);
        let s = |leader, seq| ReadIndexStamp { leader, seq };
        p.saw(s(7, 5));
        p.saw(s(7, 3)); // answers can arrive out of order
        assert_eq!(p.seen(), Some(s(7, 5)));
        p.saw(s(8, 1)); // a new leader
        assert_eq!(p.seen(), Some(s(8, 1)));
    }
}
