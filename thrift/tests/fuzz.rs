//! Property run of the server's Thrift decoding (skim → decode_call) on 100,000+ hostile
//! inputs: mutations of real calls (bit flips, truncations, inserted and deleted bytes, forged
//! lengths) and random bytes. Nothing may panic, and no single allocation may exceed the
//! message-size cap: a declared length is never trusted before it is checked.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use serve_thrift::call::{decode_call, encode_infer_call};
use serve_thrift::skim::{skim, Skim};

/// Records the largest single allocation made while armed.
struct Watch;

static LARGEST: AtomicUsize = AtomicUsize::new(0);
static ARMED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call goes to the system allocator unchanged; recording a size allocates nothing.
unsafe impl GlobalAlloc for Watch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.load(Ordering::Relaxed) != 0 {
            LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Watch = Watch;

/// splitmix64: a fixed seed makes every run the same 100,000 cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const CAP: usize = 64 * 1024;
const CASES: usize = 100_000;

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut m = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(7) {
            0 if !m.is_empty() => {
                let i = rng.below(m.len());
                m[i] ^= 1 << rng.below(8);
            }
            1 => m.truncate(rng.below(m.len() + 1)),
            2 => {
                let i = rng.below(m.len() + 1);
                m.insert(i, rng.next() as u8);
            }
            3 if !m.is_empty() => {
                let i = rng.below(m.len());
                m.remove(i);
            }
            4 if m.len() >= 4 => {
                // Forge a 4-byte big-endian length somewhere: huge, negative or near the end.
                let i = rng.below(m.len() - 3);
                let v: i32 = match rng.below(3) {
                    0 => i32::MAX - rng.below(16) as i32,
                    1 => -(rng.below(1 << 20) as i32) - 1,
                    _ => rng.below(m.len() + 64) as i32,
                };
                m[i..i + 4].copy_from_slice(&v.to_be_bytes());
            }
            5 => m = (0..rng.below(256)).map(|_| rng.next() as u8).collect(),
            _ => {
                let i = rng.below(m.len() + 1);
                let tail = m.split_off(i);
                m.extend_from_slice(&seed[..rng.below(seed.len() + 1)]);
                m.extend_from_slice(&tail);
            }
        }
    }
    m
}

#[test]
fn hostile_inputs_never_panic_or_allocate_past_the_cap() {
    let seeds = [
        encode_infer_call(
            "infer_batch",
            1,
            "uuid-1",
            &[0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3],
        ),
        encode_infer_call("infer_batch", 7, "", &[]),
        encode_infer_call("ping", 2, "x", b"y"),
        encode_infer_call("something_else", -1, "a much longer uuid", &[9; 300]),
    ];
    let mut rng = Rng(0x7070_7070);
    let (mut complete, mut decoded, mut need, mut refused) = (0, 0, 0, 0);
    ARMED.store(1, Ordering::SeqCst);
    for case in 0..CASES {
        let input = mutate(&mut rng, &seeds[case % seeds.len()]);
        match skim(&input, CAP) {
            Ok(Skim::Complete(n)) => {
                complete += 1;
                assert!(n <= input.len() && n <= CAP);
                if decode_call(&input[..n]).is_ok() {
                    decoded += 1;
                }
            }
            Ok(Skim::Need(n)) => {
                need += 1;
                assert!(
                    n > input.len() && n <= CAP,
                    "need {n} for {} bytes",
                    input.len()
                );
            }
            Err(_) => refused += 1,
        }
    }
    ARMED.store(0, Ordering::SeqCst);
    let largest = LARGEST.load(Ordering::SeqCst);
    println!(
        "{CASES} inputs: {complete} complete ({decoded} decoded as calls), {need} incomplete, {refused} refused; largest allocation {largest} bytes"
    );
    assert!(
        largest <= CAP,
        "an allocation of {largest} bytes exceeds the {CAP}-byte cap"
    );
    // The mix must exercise every outcome, or the run proves little.
    assert!(complete > 1000 && decoded > 1000 && need > 1000 && refused > 1000);
}
