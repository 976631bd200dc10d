//! Request coalescing: one origin fetch per missing slice, however many
//! viewers want it. The first viewer leads: its fill (a task of its own,
//! which outlives it) writes the slice to disk and publishes how far it
//! got; every other viewer follows, reading the file up to that point, so
//! all stream while the slice arrives rather than after it is whole.

use super::index::Entry;
use super::store::ObjectHash;
use super::CacheStatus;
use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::watch;

/// A slice of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SliceId {
    /// The object.
    pub hash: ObjectHash,
    /// The slice's index.
    pub index: u64,
}

/// What a fill found out from the origin's response header.
#[derive(Debug)]
pub enum Head {
    /// The slice's body is arriving in `file` from `body_offset` on, `len` bytes in all.
    Body {
        /// The object, as this response fixed it.
        entry: Arc<Entry>,
        /// The file being written.
        file: Arc<File>,
        /// Where the body starts in it.
        body_offset: u64,
        /// The body's whole length.
        len: u64,
        /// What the viewers' `X-Cache` says.
        status: CacheStatus,
    },
    /// The origin confirmed the cached object (a 304): its refreshed entry.
    NotModified(Arc<Entry>),
    /// Not for the cache (not storable, not a 206 of the slice): each
    /// viewer fetches it itself.
    Pass,
    /// No origin answered, or one answered with a server error: a stale
    /// copy may be served (`stale-if-error`), else each viewer tries itself.
    Failed,
}

/// How far a fill has got.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// The response header's verdict, once read.
    pub head: Option<Arc<Head>>,
    /// Body bytes written to the file.
    pub written: u64,
    /// `Some(true)`: the slice is whole and stored; `Some(false)`: the fill
    /// gave up (viewers fetch the rest themselves).
    pub end: Option<bool>,
}

/// The fills in flight.
#[derive(Default)]
pub struct Fills {
    map: Mutex<HashMap<SliceId, watch::Receiver<Progress>>>,
}

/// The answer to [`Fills::join`].
pub enum Joined {
    /// A fill is in flight: follow it.
    Follow(Follower),
    /// None was: this caller must run it (and follows it too).
    Lead(Leader, Follower),
}

impl Fills {
    /// Joins the fill of `id`, or makes the caller its leader.
    pub fn join(self: &Arc<Self>, id: SliceId) -> Joined {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(rx) = map.get(&id) {
            return Joined::Follow(Follower { rx: rx.clone() });
        }
        let (tx, rx) = watch::channel(Progress::default());
        map.insert(id, rx.clone());
        let leader = Leader {
            id,
            fills: self.clone(),
            tx,
            ended: false,
        };
        Joined::Lead(leader, Follower { rx })
    }

    /// Fills in flight.
    pub fn in_flight(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The fill's side: publishes its progress. Dropped, the fill leaves the
/// map (newcomers then find the stored slice, or start again); dropped
/// without [`Leader::end`], its followers learn it gave up.
pub struct Leader {
    id: SliceId,
    fills: Arc<Fills>,
    tx: watch::Sender<Progress>,
    ended: bool,
}

impl Leader {
    /// Publishes the response header's verdict.
    pub fn head(&self, head: Head) {
        let head = Arc::new(head);
        self.tx.send_modify(|p| p.head = Some(head));
    }

    /// Publishes that `written` body bytes are in the file.
    pub fn wrote(&self, written: u64) {
        self.tx.send_modify(|p| p.written = written);
    }

    /// Ends the fill: `true` once the slice is stored (after it is in the index).
    pub fn end(mut self, whole: bool) {
        self.ended = true;
        self.tx.send_modify(|p| p.end = Some(whole));
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if !self.ended {
            self.tx.send_modify(|p| p.end = Some(false));
        }
        let mut map = self
            .fills
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.remove(&self.id);
    }
}

/// A viewer's side of a fill.
pub struct Follower {
    rx: watch::Receiver<Progress>,
}

/// The fill gave up before the bytes a follower waits for.
#[derive(Debug)]
pub struct Broken;

impl Follower {
    /// Waits for the response header's verdict; `None`: the fill gave up first.
    pub async fn head(&mut self) -> Option<Arc<Head>> {
        let p = self
            .rx
            .wait_for(|p| p.head.is_some() || p.end.is_some())
            .await
            .ok()?;
        p.head.clone()
    }

    /// Waits until the file holds bytes past `at` and returns how many it
    /// holds, or the fill ended and `at` is its whole length.
    pub async fn available(&mut self, at: u64) -> Result<u64, Broken> {
        let p = self
            .rx
            .wait_for(|p| p.written > at || p.end.is_some())
            .await
            .map_err(|_| Broken)?;
        if p.written > at || p.end == Some(true) {
            Ok(p.written)
        } else {
            Err(Broken)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> SliceId {
        SliceId { hash: 1, index: 0 }
    }

    #[tokio::test]
    async fn the_first_leads_the_others_follow_the_bytes_as_they_arrive() {
        let fills = Arc::new(Fills::default());
        let Joined::Lead(leader, _) = fills.join(id()) else {
            panic!("the first caller leads");
        };
        let Joined::Follow(mut follower) = fills.join(id()) else {
            panic!("the second follows");
        };
        let waiting = tokio::spawn(async move {
            let head = follower.head().await;
            let first = follower.available(0).await;
            (head.is_some(), first.ok())
        });
        leader.head(Head::Pass);
        leader.wrote(5);
        let (had_head, first) = waiting.await.unwrap();
        assert!(had_head);
        assert_eq!(first, Some(5));
        leader.end(true);
        assert_eq!(fills.in_flight(), 0, "an ended fill leaves the map");
        assert!(matches!(fills.join(id()), Joined::Lead(..)));
    }

    #[tokio::test]
    async fn a_leader_dropped_unfinished_breaks_its_followers() {
        let fills = Arc::new(Fills::default());
        let Joined::Lead(leader, mut follower) = fills.join(id()) else {
            panic!()
        };
        leader.wrote(3);
        drop(leader);
        assert_eq!(
            follower.available(2).await.unwrap(),
            3,
            "written bytes stay readable"
        );
        assert!(follower.available(3).await.is_err());
        assert_eq!(fills.in_flight(), 0);
    }
}
