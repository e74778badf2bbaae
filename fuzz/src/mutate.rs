//! Byte-level mutation of a seed input: the kinds of damage that break parsers — flipped bits,
//! boundary bytes, huge varints (postcard's lengths), lost and doubled spans, truncation,
//! splices with other seeds, and tokens of the input's own language (`dictionary`).

use crate::rng::Rng;

/// Applies one to eight mutations to a copy of `seed`.
pub fn mutate(rng: &mut Rng, seed: &[u8], others: &[Vec<u8>], dictionary: &[&[u8]]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..1 + rng.below(8) {
        mutate_once(rng, &mut data, others, dictionary);
        if data.len() > 1 << 20 {
            data.truncate(1 << 20);
        }
    }
    data
}

fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>, others: &[Vec<u8>], dictionary: &[&[u8]]) {
    let at = rng.below(data.len() + 1);
    match rng.below(11) {
        0 if !data.is_empty() => {
            let i = rng.below(data.len());
            data[i] ^= 1 << rng.below(8);
        }
        1 if !data.is_empty() => {
            let i = rng.below(data.len());
            data[i] = *rng.pick(&[0u8, 1, 0x7f, 0x80, 0xfe, 0xff, b'\n', b'"', b'[', b'{']);
        }
        2 => {
            // A postcard varint of a boundary value: lengths and counts that ask for everything.
            let value = *rng.pick(&[
                u64::MAX,
                u64::from(u32::MAX),
                1 << 31,
                1 << 20,
                65_536,
                255,
                0,
            ]);
            let mut v = value;
            let mut bytes = Vec::new();
            loop {
                let b = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 {
                    bytes.push(b);
                    break;
                }
                bytes.push(b | 0x80);
            }
            data.splice(at..at, bytes);
        }
        3 if !data.is_empty() => {
            let end = (at + 1 + rng.below(64)).min(data.len());
            data.drain(at.min(end)..end);
        }
        4 if !data.is_empty() => {
            let start = rng.below(data.len());
            let end = (start + 1 + rng.below(256)).min(data.len());
            let span = data[start..end].to_vec();
            data.splice(
                at..at,
                span.iter()
                    .copied()
                    .cycle()
                    .take(span.len() * (1 + rng.below(4))),
            );
        }
        5 => data.truncate(at),
        6 if !others.is_empty() => {
            let other = rng.pick(others);
            let from = rng.below(other.len() + 1);
            let tail = other[from..].to_vec();
            data.truncate(at);
            data.extend_from_slice(&tail);
        }
        7 | 8 if !dictionary.is_empty() => {
            let token = rng.pick(dictionary);
            data.splice(at..at, token.iter().copied());
        }
        9 => {
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            data.splice(at..at, bytes);
        }
        _ => {
            // A token repeated: deep nesting, long names.
            if let Some(token) = dictionary.get(rng.below(dictionary.len().max(1))) {
                let times = 1 + rng.below(200);
                data.splice(
                    at..at,
                    token.iter().copied().cycle().take(token.len() * times),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_replays_the_same_inputs() {
        let seed = b"functions: {}".to_vec();
        let run = |s| {
            let mut rng = Rng::new(s);
            (0..100)
                .map(|_| mutate(&mut rng, &seed, &[], &[b"[".as_slice()]))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }
}
