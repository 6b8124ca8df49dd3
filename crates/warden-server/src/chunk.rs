//! A run's output as it comes: what a runner feeds while the run goes on
//! (today the `warden run` child's pipes; in-process runs may feed the
//! same sink), for whoever wants it before the report (the event streams
//! of [`crate::stream`]). Nothing here knows about HTTP.

/// Which of the program's outputs a chunk is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Stdout,
    Stderr,
}

impl Channel {
    pub fn name(self) -> &'static str {
        match self {
            Channel::Stdout => "stdout",
            Channel::Stderr => "stderr",
        }
    }
}

/// Bytes a run wrote, in the order they were read: already redacted and
/// within the run's output cap, so that the chunks of a channel put
/// together are exactly the bytes of the finished run's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub channel: Channel,
    pub bytes: Vec<u8>,
}

/// Where a runner sends chunks. Bounded: a slow consumer slows the
/// reading of the pipe (and so the program), it does not grow memory.
pub type ChunkSink = tokio::sync::mpsc::Sender<Chunk>;

/// Chunks that may wait in a sink.
pub const SINK_DEPTH: usize = 64;
