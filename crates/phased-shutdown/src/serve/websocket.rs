//! Just enough of WebSocket framing (RFC 6455 §5.2) to close a connection the handler owns:
//! where one frame ends, which frames carry data, and the Close frame itself.
//!
//! Why the server can do this without the handler: a Close frame is a control frame, and
//! control frames may be sent between any two frames, even between the fragments of a message
//! (§5.4). So once the handler's last frame is complete, the server writes Close
//! (1001 "going away" by default) itself. From then on the handler's data frames are refused
//! (its sends fail, as tungstenite's do after a Close), its control frames (the reply to the
//! client's Close, pongs) are dropped, and what the client sends still reaches the handler, so
//! it sees the client's Close and ends.

/// Where a stream of frames stands: inside a header, inside a payload, or between two frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Frames {
    /// `have` bytes of a header read (0: between two frames).
    Header {
        have: u8,
        bytes: [u8; 14],
    },
    Payload {
        left: u64,
    },
}

impl Default for Frames {
    fn default() -> Self {
        Self::Header {
            have: 0,
            bytes: [0; 14],
        }
    }
}

impl Frames {
    /// Between two frames: a control frame may go here.
    pub(super) fn at_boundary(&self) -> bool {
        matches!(self, Self::Header { have: 0, .. })
    }

    /// How many of the next bytes belong to the frame under way (`usize::MAX` between frames or
    /// inside a header, where the length is not known yet).
    pub(super) fn left_in_frame(&self) -> usize {
        match self {
            Self::Payload { left } => usize::try_from(*left).unwrap_or(usize::MAX),
            Self::Header { .. } => usize::MAX,
        }
    }

    /// Follows `data`; true when a data frame (text, binary, continuation) began in it.
    pub(super) fn feed(&mut self, mut data: &[u8]) -> bool {
        let mut data_frame = false;
        while !data.is_empty() {
            match self {
                Self::Payload { left } => {
                    let take = (*left).min(data.len() as u64);
                    *left -= take;
                    data = &data[take as usize..];
                    if *left == 0 {
                        *self = Self::default();
                    }
                }
                Self::Header { have, bytes } => {
                    bytes[usize::from(*have)] = data[0];
                    *have += 1;
                    data = &data[1..];
                    let Some(needed) = header_len(&bytes[..usize::from(*have)]) else {
                        continue;
                    };
                    if usize::from(*have) < needed {
                        continue;
                    }
                    let opcode = bytes[0] & 0x0f;
                    data_frame |= opcode < 0x8;
                    let left = payload_len(bytes);
                    *self = if left == 0 {
                        Self::default()
                    } else {
                        Self::Payload { left }
                    };
                }
            }
        }
        data_frame
    }
}

/// The whole header's length, once its first two bytes are known.
fn header_len(have: &[u8]) -> Option<usize> {
    let [_, second, ..] = have else { return None };
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    Some(2 + extended + mask)
}

fn payload_len(header: &[u8; 14]) -> u64 {
    match header[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
        127 => u64::from_be_bytes([
            header[2], header[3], header[4], header[5], header[6], header[7], header[8], header[9],
        ]),
        n => u64::from(n),
    }
}

/// The server's Close frame (unmasked, as a server's frames are) with `code` and a reason.
pub(super) fn close_frame(code: u16) -> Vec<u8> {
    const REASON: &[u8] = b"server shutting down";
    let mut frame = Vec::with_capacity(4 + REASON.len());
    frame.push(0x88); // FIN, opcode Close
    frame.push((2 + REASON.len()) as u8);
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(REASON);
    frame
}

/// Finds the end of the HTTP head (`\r\n\r\n`) in the bytes written before the first frame:
/// the `101 Switching Protocols` answer.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct HeadEnd {
    matched: u8,
}

impl HeadEnd {
    /// How many bytes of `data` are still head (all of them if the head does not end there).
    pub(super) fn head_bytes(&self, data: &[u8]) -> usize {
        let mut matched = self.matched;
        for (i, byte) in data.iter().enumerate() {
            matched = step(matched, *byte);
            if matched == 4 {
                return i + 1;
            }
        }
        data.len()
    }

    /// Follows `data` (head bytes only); true once the head is complete.
    pub(super) fn feed(&mut self, data: &[u8]) -> bool {
        for byte in data {
            self.matched = step(self.matched, *byte);
        }
        self.matched == 4
    }
}

fn step(matched: u8, byte: u8) -> u8 {
    match (matched, byte) {
        (0 | 2, b'\r') => matched + 1,
        (1 | 3, b'\n') => matched + 1,
        (4, _) => 4,
        (_, b'\r') => 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, masked: bool, len: usize) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        let mask = if masked { 0x80 } else { 0 };
        match len {
            0..=125 => f.push(mask | len as u8),
            126..=65535 => {
                f.push(mask | 126);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                f.push(mask | 127);
                f.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend(std::iter::repeat_n(b'x', len));
        f
    }

    #[test]
    fn frames_of_every_length_form_are_followed_byte_by_byte() {
        for (opcode, masked, len) in [
            (1, false, 0),
            (2, false, 125),
            (1, true, 126),
            (2, false, 70_000),
            (0x9, true, 3),
        ] {
            let bytes = frame(opcode, masked, len);
            let mut whole = Frames::default();
            assert_eq!(whole.feed(&bytes), opcode < 8);
            assert!(whole.at_boundary());
            let mut one_by_one = Frames::default();
            for (i, b) in bytes.iter().enumerate() {
                assert!(
                    !one_by_one.at_boundary() || i == 0,
                    "boundary inside the frame at byte {i}"
                );
                one_by_one.feed(std::slice::from_ref(b));
            }
            assert!(one_by_one.at_boundary());
        }
    }

    #[test]
    fn only_data_frames_are_reported() {
        let mut f = Frames::default();
        let mut bytes = frame(0x8, false, 2);
        bytes.extend(frame(0xA, false, 0));
        assert!(!f.feed(&bytes), "Close and Pong are control frames");
        assert!(f.feed(&frame(0x1, false, 5)));
    }

    #[test]
    fn the_close_frame_is_one_unmasked_frame_with_its_code() {
        let close = close_frame(1001);
        assert_eq!(close[0], 0x88);
        assert_eq!(&close[2..4], &1001u16.to_be_bytes());
        let mut f = Frames::default();
        assert!(!f.feed(&close));
        assert!(f.at_boundary());
    }

    #[test]
    fn the_head_ends_at_its_blank_line() {
        let head = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n\x81\x00";
        let mut end = HeadEnd::default();
        let n = end.head_bytes(head);
        assert_eq!(n, head.len() - 2);
        assert!(end.feed(&head[..n]));
        // Split across writes, and with a lone CR inside.
        let mut end = HeadEnd::default();
        assert!(!end.feed(b"HTTP/1.1 101 x\r\na: b\r"));
        assert_eq!(end.head_bytes(b"\n\r\nrest"), 3);
    }
}
