//! Sending a stream, frame by frame, with its pauses, cuts and stalls.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::plan::Fault;
use super::wire::{self, Exchange, Frame};

/// Sends a stream's frames with the fault applied; ends the body by dropping the sender.
pub(crate) async fn send_stream(
    frames: Vec<Frame>,
    fault: Fault,
    exchange: Exchange,
    interval: Duration,
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
) {
    // Faults that act "after N content chunks" act at the frame that would come next: the
    // (N+1)-th content chunk, or what follows the last one (finish reason, terminator).
    let break_at = |n: usize| {
        let mut content = frames.iter().enumerate().filter(|(_, f)| f.content);
        content.nth(n).map(|(i, _)| i).unwrap_or_else(|| {
            frames
                .iter()
                .rposition(|f| f.content)
                .map_or(frames.len(), |i| i + 1)
        })
    };
    let breaks = match fault {
        Fault::CutAfter { chunks, .. }
        | Fault::StallAfter { chunks }
        | Fault::ErrorAfter { chunks } => Some(break_at(chunks)),
        _ => None,
    };
    let mut content_sent = 0;
    for (i, frame) in frames.iter().enumerate() {
        if breaks == Some(i) {
            match fault {
                Fault::CutAfter { abort: true, .. } => {
                    // NOTE: hyper drops its unflushed write buffer when a body fails. Let it
                    // take every frame and flush (it flushes when the body runs dry) before
                    // breaking the body, so the client receives the chunks before the abort.
                    while tx.capacity() < tx.max_capacity() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let err = io::Error::new(io::ErrorKind::ConnectionAborted, "cut");
                    let _ = tx.send(Err(err)).await;
                }
                Fault::StallAfter { .. } => tx.closed().await,
                Fault::ErrorAfter { .. } => {
                    let _ = tx
                        .send(Ok(wire::stream_error_frame(&exchange).bytes()))
                        .await;
                }
                _ => {}
            }
            return;
        }
        if frame.content {
            if content_sent == 0 {
                if let Fault::SlowFirstToken { delay } = fault {
                    tokio::time::sleep(delay).await;
                }
            } else if !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            content_sent += 1;
        }
        let bytes = match fault {
            Fault::MalformedAt { chunk } if frame.content && content_sent == chunk => {
                frame.malformed().bytes()
            }
            _ => frame.bytes(),
        };
        if tx.send(Ok(bytes)).await.is_err() {
            return; // the client went away
        }
    }
    if breaks == Some(frames.len()) {
        match fault {
            Fault::StallAfter { .. } => tx.closed().await,
            Fault::ErrorAfter { .. } => {
                let _ = tx
                    .send(Ok(wire::stream_error_frame(&exchange).bytes()))
                    .await;
            }
            _ => {}
        }
    }
}

/// A response body fed by a channel.
pub(crate) struct ChannelBody(pub(crate) mpsc::Receiver<Result<Bytes, io::Error>>);

impl futures_core::Stream for ChannelBody {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}
