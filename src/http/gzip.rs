//! gzip for `/metrics` (RFC 1952) with one deflate state per thread, reset between responses
//! instead of made anew: a fresh state allocates and clears some 300 KiB of tables, which
//! for a body of a few tens of KiB costs as much as compressing it.

use std::cell::RefCell;

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

thread_local! {
    static DEFLATE: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), false));
}

/// The gzip member header: deflate, no name or time, "unknown" operating system.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// `body` gzipped, at deflate's fastest level; `None` only if deflate reports an error.
pub(crate) fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(HEADER.len() + body.len() / 4 + 64);
    out.extend_from_slice(&HEADER);
    DEFLATE.with(|deflate| {
        let mut deflate = deflate.borrow_mut();
        deflate.reset();
        loop {
            let consumed = deflate.total_in() as usize;
            if out.len() == out.capacity() {
                out.reserve(body.len() / 8 + 64);
            }
            let input = body.get(consumed..).unwrap_or_default();
            match deflate.compress_vec(input, &mut out, FlushCompress::Finish) {
                Ok(Status::StreamEnd) => return Some(()),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    })?;
    let mut crc = Crc::new();
    crc.update(body);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    // ISIZE is the length modulo 2^32.
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .expect("a valid gzip stream");
        out
    }

    #[test]
    fn bodies_of_every_size_come_back_whole_and_the_state_is_reused() {
        let text: Vec<u8> = (0..200_000u32)
            .flat_map(|i| {
                format!("powermon_power_watts{{sensor=\"s{}\"}} {}\n", i % 64, i).into_bytes()
            })
            .collect();
        for len in [0, 1, 100, 30_000, text.len()] {
            let body = &text[..len];
            // Twice: the second response reuses the state the first left behind.
            for _ in 0..2 {
                let gz = gzip(body).unwrap();
                assert_eq!(gunzip(&gz), body, "{len} bytes");
                if len > 1000 {
                    assert!(gz.len() < len / 4, "{len} bytes gave {}", gz.len());
                }
            }
        }
    }
}
