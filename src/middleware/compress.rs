//! `compress`: which responses to compress, with which coding, and a
//! streaming encoder (gzip from `flate2`, brotli from `brotli`, zstd from
//! `zstd`) that takes the body's chunks as they come and gives compressed
//! bytes back, flushed whenever the caller has nothing more to give right
//! now: the whole body is never held.

use std::io::Write;

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Method, StatusCode};

use crate::config::{CompressConfig, Encoding};

/// The coding to use for a request, from its `Accept-Encoding`: the
/// offered coding with the highest q-value (ties: the config's order), or
/// none (`identity` only, q=0, nothing offered).
pub fn negotiate(req: &HeaderMap, offered: &[Encoding]) -> Option<Encoding> {
    let mut best: Option<(u32, usize, Encoding)> = None;
    for v in req.get_all(header::ACCEPT_ENCODING) {
        let Ok(v) = v.to_str() else { continue };
        for item in v.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .filter_map(|q| q.trim().parse::<f32>().ok())
                .next()
                .unwrap_or(1.0);
            let q = (q.clamp(0.0, 1.0) * 1000.0) as u32;
            if q == 0 {
                continue;
            }
            for (rank, &e) in offered.iter().enumerate() {
                if name == e.as_str() || name == "*" {
                    let better = match best {
                        None => true,
                        Some((bq, br, _)) => q > bq || (q == bq && rank < br),
                    };
                    if better {
                        best = Some((q, rank, e));
                    }
                }
            }
        }
    }
    best.map(|(_, _, e)| e)
}

/// Whether a response is worth compressing: a 2xx with a body, not already
/// encoded, not a range, of a listed type, not known to be smaller than
/// `min_bytes`, and not marked `no-transform`.
pub fn worth_it(
    cfg: &CompressConfig,
    method: &Method,
    ranged: bool,
    status: StatusCode,
    resp: &HeaderMap,
) -> bool {
    if *method == Method::HEAD
        || ranged
        || !status.is_success()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::PARTIAL_CONTENT
        || resp.contains_key(header::CONTENT_ENCODING)
        || resp.contains_key(header::CONTENT_RANGE)
    {
        return false;
    }
    if resp
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("no-transform"))
    {
        return false;
    }
    let small = resp
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n < cfg.min_bytes);
    if small {
        return false;
    }
    let Some(ct) = resp.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    type_matches(&cfg.types, ct)
}

/// Whether a `Content-Type` value is one of `types` (`text/*` covers every
/// `text/...`; parameters are ignored).
pub fn type_matches(types: &[String], content_type: &str) -> bool {
    let ct = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let Some((major, _)) = ct.split_once('/') else {
        return false;
    };
    types
        .iter()
        .any(|t| t == "*/*" || *t == ct || t.strip_suffix("/*").is_some_and(|m| m == major))
}

/// A streaming encoder.
pub enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    /// A new encoder at a level that suits a proxy (fast over small):
    /// gzip 6, brotli 4, zstd 3.
    pub fn new(e: Encoding) -> std::io::Result<Encoder> {
        Ok(match e {
            Encoding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(6),
            )),
            Encoding::Br => Encoder::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                16 * 1024,
                4,
                22,
            ))),
            Encoding::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(Vec::new(), 3)?),
        })
    }

    /// Feeds bytes in; compressed output waits in [`Encoder::take`].
    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.write_all(data),
            Encoder::Br(e) => e.write_all(data),
            Encoder::Zstd(e) => e.write_all(data),
        }
    }

    /// Flushes what was fed so far so that it can be decoded at once.
    pub fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Br(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }

    /// Compressed bytes produced so far (taken out).
    pub fn take(&mut self) -> Bytes {
        let buf = match self {
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Br(e) => e.get_mut(),
            Encoder::Zstd(e) => e.get_mut(),
        };
        Bytes::from(std::mem::take(buf))
    }

    /// Ends the stream; returns the last bytes.
    pub fn finish(self) -> std::io::Result<Bytes> {
        let out = match self {
            Encoder::Gzip(e) => e.finish()?,
            Encoder::Br(e) => e.into_inner(),
            Encoder::Zstd(e) => e.finish()?,
        };
        Ok(Bytes::from(out))
    }

    /// Bytes waiting in [`Encoder::take`].
    pub fn pending(&self) -> usize {
        match self {
            Encoder::Gzip(e) => e.get_ref().len(),
            Encoder::Br(e) => e.get_ref().len(),
            Encoder::Zstd(e) => e.get_ref().len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, v.parse().unwrap());
        h
    }

    const ALL: &[Encoding] = &[Encoding::Zstd, Encoding::Br, Encoding::Gzip];

    #[test]
    fn negotiation_follows_q_values_then_preference() {
        assert_eq!(
            negotiate(&accept("gzip, deflate"), ALL),
            Some(Encoding::Gzip)
        );
        assert_eq!(negotiate(&accept("gzip, br"), ALL), Some(Encoding::Br));
        assert_eq!(
            negotiate(&accept("gzip;q=1, br;q=0.5"), ALL),
            Some(Encoding::Gzip)
        );
        assert_eq!(negotiate(&accept("br;q=0, gzip;q=0"), ALL), None);
        assert_eq!(negotiate(&accept("identity"), ALL), None);
        assert_eq!(negotiate(&accept("*"), ALL), Some(Encoding::Zstd));
        assert_eq!(negotiate(&HeaderMap::new(), ALL), None);
        assert_eq!(negotiate(&accept("zstd"), &[Encoding::Gzip]), None);
    }

    #[test]
    fn skips_encoded_small_ranged_and_other_types() {
        let cfg = CompressConfig {
            types: vec!["text/*".into(), "application/json".into()],
            min_bytes: 100,
            encodings: ALL.to_vec(),
        };
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "text/html; charset=utf-8".parse().unwrap(),
        );
        let ok = StatusCode::OK;
        assert!(worth_it(&cfg, &Method::GET, false, ok, &h));
        assert!(!worth_it(&cfg, &Method::GET, true, ok, &h));
        assert!(!worth_it(&cfg, &Method::HEAD, false, ok, &h));
        assert!(!worth_it(
            &cfg,
            &Method::GET,
            false,
            StatusCode::NOT_FOUND,
            &h
        ));
        h.insert(header::CONTENT_LENGTH, "99".parse().unwrap());
        assert!(!worth_it(&cfg, &Method::GET, false, ok, &h));
        h.insert(header::CONTENT_LENGTH, "100".parse().unwrap());
        assert!(worth_it(&cfg, &Method::GET, false, ok, &h));
        h.insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
        assert!(!worth_it(&cfg, &Method::GET, false, ok, &h));
        h.remove(header::CONTENT_ENCODING);
        h.insert(header::CONTENT_TYPE, "image/png".parse().unwrap());
        assert!(!worth_it(&cfg, &Method::GET, false, ok, &h));
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        assert!(worth_it(&cfg, &Method::GET, false, ok, &h));
    }

    #[test]
    fn each_encoder_streams_and_round_trips() {
        let text = "switchyard compresses what it streams. ".repeat(200);
        for e in ALL {
            let mut enc = Encoder::new(*e).unwrap();
            enc.write(&text.as_bytes()[..1000]).unwrap();
            enc.flush().unwrap();
            let first = enc.take();
            assert!(!first.is_empty(), "{e:?}: a flush gives bytes at once");
            enc.write(&text.as_bytes()[1000..]).unwrap();
            let mut all = first.to_vec();
            all.extend_from_slice(&enc.take());
            all.extend_from_slice(&enc.finish().unwrap());
            let mut out = String::new();
            match e {
                Encoding::Gzip => {
                    flate2::read::GzDecoder::new(&all[..])
                        .read_to_string(&mut out)
                        .unwrap();
                }
                Encoding::Br => {
                    brotli::Decompressor::new(&all[..], 4096)
                        .read_to_string(&mut out)
                        .unwrap();
                }
                Encoding::Zstd => {
                    out = String::from_utf8(zstd::decode_all(&all[..]).unwrap()).unwrap();
                }
            }
            assert_eq!(out, text, "{e:?}");
            assert!(all.len() < text.len() / 4, "{e:?}: {} bytes", all.len());
        }
    }
}
