//! Where does the next TBinaryProtocol message end? A buffered-transport peer sends messages
//! back to back with no length prefix, so the server must walk the message's structure to find
//! its end. This walk reads lengths without allocating, and refuses lengths above the cap, so a
//! peer that declares a 2 GiB string costs us nothing.

/// What the bytes so far say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skim {
    /// A whole message of this many bytes is at the front of the buffer.
    Complete(usize),
    /// Not yet: at least this many bytes in total are needed.
    Need(usize),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkimError {
    #[error("message of at least {declared} bytes is above the limit of {limit} bytes")]
    TooLarge { declared: usize, limit: usize },
    #[error("malformed Thrift binary message: {0}")]
    Malformed(&'static str),
}

/// Deeper nesting than this is no message of ours; the bound keeps the walk's stack small.
const MAX_DEPTH: usize = 32;

struct Walker<'a> {
    buf: &'a [u8],
    pos: usize,
    limit: usize,
}

/// Raised inside the walk when the buffer ends early: carries the total length needed.
enum Stop {
    Need(usize),
    Err(SkimError),
}

impl From<SkimError> for Stop {
    fn from(e: SkimError) -> Self {
        Stop::Err(e)
    }
}

impl<'a> Walker<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Stop> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(SkimError::Malformed("length overflow"))?;
        if end > self.limit {
            return Err(SkimError::TooLarge {
                declared: end,
                limit: self.limit,
            }
            .into());
        }
        if end > self.buf.len() {
            return Err(Stop::Need(end));
        }
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, Stop> {
        Ok(self.take(1)?[0])
    }

    fn i32(&mut self) -> Result<i32, Stop> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn len(&mut self) -> Result<usize, Stop> {
        let n = self.i32()?;
        usize::try_from(n).map_err(|_| SkimError::Malformed("negative length").into())
    }

    fn string(&mut self) -> Result<(), Stop> {
        let n = self.len()?;
        self.take(n).map(|_| ())
    }

    fn value(&mut self, ttype: u8, depth: usize) -> Result<(), Stop> {
        if depth > MAX_DEPTH {
            return Err(SkimError::Malformed("nesting too deep").into());
        }
        match ttype {
            2 | 3 => self.take(1).map(|_| ()),  // bool, byte
            6 => self.take(2).map(|_| ()),      // i16
            8 => self.take(4).map(|_| ()),      // i32
            4 | 10 => self.take(8).map(|_| ()), // double, i64
            11 => self.string(),                // string, binary
            12 => self.structure(depth + 1),
            13 => {
                let (k, v) = (self.u8()?, self.u8()?);
                let n = self.len()?;
                for _ in 0..n {
                    self.value(k, depth + 1)?;
                    self.value(v, depth + 1)?;
                }
                Ok(())
            }
            14 | 15 => {
                let e = self.u8()?;
                let n = self.len()?;
                for _ in 0..n {
                    self.value(e, depth + 1)?;
                }
                Ok(())
            }
            _ => Err(SkimError::Malformed("unknown field type").into()),
        }
    }

    fn structure(&mut self, depth: usize) -> Result<(), Stop> {
        loop {
            let ttype = self.u8()?;
            if ttype == 0 {
                return Ok(());
            }
            self.take(2)?; // field id
            self.value(ttype, depth)?;
        }
    }

    fn message(&mut self) -> Result<(), Stop> {
        let first = self.i32()?;
        if first < 0 {
            if (first as u32) & 0xffff_0000 != 0x8001_0000 {
                return Err(SkimError::Malformed("bad protocol version").into());
            }
            self.string()?;
            self.take(4)?; // sequence id
        } else {
            // Old, unversioned header: name length, name, type, sequence id.
            let n = first as usize;
            self.take(n)?;
            self.take(5)?;
        }
        self.structure(0)
    }
}

/// Looks at the front of `buf`; `limit` caps the size of one message.
pub fn skim(buf: &[u8], limit: usize) -> Result<Skim, SkimError> {
    let mut w = Walker { buf, pos: 0, limit };
    match w.message() {
        Ok(()) => Ok(Skim::Complete(w.pos)),
        Err(Stop::Need(n)) => Ok(Skim::Need(n)),
        Err(Stop::Err(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call;

    fn sample() -> Vec<u8> {
        call::encode_infer_call("infer_batch", 7, "id-1", &[1, 2, 3, 4, 5])
    }

    #[test]
    fn finds_the_end_of_a_whole_message_and_waits_for_a_partial_one() {
        let msg = sample();
        assert_eq!(skim(&msg, 1 << 20), Ok(Skim::Complete(msg.len())));
        let mut two = msg.clone();
        two.extend_from_slice(&msg);
        assert_eq!(skim(&two, 1 << 20), Ok(Skim::Complete(msg.len())));
        for cut in 0..msg.len() {
            match skim(&msg[..cut], 1 << 20) {
                Ok(Skim::Need(n)) => assert!(n > cut && n <= msg.len(), "cut {cut}: need {n}"),
                other => panic!("cut {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn refuses_huge_declared_lengths_before_reading_them() {
        // Versioned header, then a name of 2^31-1 bytes.
        let mut msg = vec![0x80, 0x01, 0x00, 0x01];
        msg.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            skim(&msg, 64 << 20),
            Err(SkimError::TooLarge { .. })
        ));
        let mut msg = vec![0x80, 0x01, 0x00, 0x01];
        msg.extend_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(skim(&msg, 64 << 20), Err(SkimError::Malformed(_))));
    }

    #[test]
    fn rejects_garbage() {
        assert!(skim(b"GET / HTTP/1.1\r\n\r\n", 1 << 20).is_err());
        assert!(skim(&[0x80, 0x02, 0, 1, 0, 0, 0, 0], 1 << 20).is_err());
    }
}
