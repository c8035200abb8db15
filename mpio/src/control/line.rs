//! Lines of the control protocol, read with a cap: a peer that sends a
//! line without end (no newline) costs at most the cap in memory, and is
//! told why it is cut off.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// Longest request: requests are small (a policy with its paths); a longer
/// line is not a control request.
pub(crate) const MAX_REQUEST: usize = 64 * 1024;

/// Longest answer the CLI reads: the largest ones list every path of
/// every device (a few hundred bytes each).
pub(crate) const MAX_ANSWER: usize = 16 << 20;

/// A line that cannot be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LineError {
    /// No newline within the cap; the stream is out of step.
    #[error("a line longer than {0} bytes")]
    TooLong(usize),
    /// The protocol is JSON text.
    #[error("a line that is not UTF-8 text")]
    NotText,
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads one line of at most `max` bytes, without its newline (a last line
/// without one counts too); `None` at the end of the stream. After an
/// error the stream must be closed.
pub(crate) async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R, max: usize) -> Result<Option<String>, LineError> {
    let mut buf = Vec::new();
    // One byte more than the cap: a line of exactly `max` bytes still has
    // room for its newline.
    let n = (&mut *r).take(max as u64 + 1).read_until(b'\n', &mut buf).await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > max {
        return Err(LineError::TooLong(max));
    }
    String::from_utf8(buf).map(Some).map_err(|_| LineError::NotText)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(mut input: &[u8], max: usize) -> Vec<Result<Option<String>, String>> {
        let mut out = Vec::new();
        loop {
            let r = read_line(&mut input, max).await.map_err(|e| e.to_string());
            let end = !matches!(r, Ok(Some(_)));
            out.push(r);
            if end {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn lines_up_to_the_cap_are_read_and_longer_ones_refused() {
        let ok = |s: &str| Ok(Some(s.to_owned()));
        assert_eq!(lines(b"ab\ncd\n", 2).await, [ok("ab"), ok("cd"), Ok(None)]);
        assert_eq!(lines(b"ab\ncd", 2).await, [ok("ab"), ok("cd"), Ok(None)]);
        assert_eq!(lines(b"abc\n", 2).await, [Err("a line longer than 2 bytes".to_owned())]);
        assert_eq!(lines(b"\xff\n", 2).await, [Err("a line that is not UTF-8 text".to_owned())]);
    }

    /// A 50 MB line without a newline is cut off after the cap: what is
    /// read of it is the cap and one byte, not the line.
    #[tokio::test]
    async fn an_endless_line_costs_only_the_cap() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let writer = tokio::spawn(async move {
            let chunk = vec![b'x'; 1 << 20];
            let mut sent = 0usize;
            while sent < 50 << 20 {
                if tokio::io::AsyncWriteExt::write_all(&mut client, &chunk).await.is_err() {
                    break;
                }
                sent += chunk.len();
            }
            sent
        });
        let mut reader = tokio::io::BufReader::new(server);
        let e = read_line(&mut reader, MAX_REQUEST).await.unwrap_err();
        assert!(matches!(e, LineError::TooLong(MAX_REQUEST)), "{e}");
        drop(reader);
        let sent = writer.await.unwrap();
        assert!(sent < 50 << 20, "the reader stopped after the cap, so the writer could not send it all ({sent})");
    }
}
