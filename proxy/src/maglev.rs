//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable
//! Software Network Load Balancer", NSDI 2016, §3.4): a lookup table of
//! `M` slots (M prime) filled from each backend's own permutation of the
//! slots, so that every backend holds about `M / N` of them and a change of
//! the backend set moves only about `1 / N` of the slots.
//!
//! The datapath picks `table[hash(flow) % M]` for external traffic of a
//! Service that asks for it. Every node builds the same table from the same
//! backends (sorted addresses and ports, fixed hash functions, no seeds), so
//! any node sends a given flow to the same backend: traffic from outside
//! that an upstream router spreads over the nodes (ECMP) keeps its backend
//! when the router moves it to another node.
//!
//! Written here: the algorithm is a page of code, and the crates that have
//! it hash with their own (and changeable) functions, where the table must
//! stay the same across agent versions.

use std::net::Ipv4Addr;

/// Table sizes (primes), the smallest at least 100 × the backends used: the
/// paper's bound for a spread within about 1 %. Cilium's default is 16,381.
const SIZES: [u32; 4] = [251, 1_021, 4_093, 16_381];

/// The table size for `n` backends.
pub fn size_for(n: usize) -> u32 {
    SIZES
        .iter()
        .copied()
        .find(|m| *m as usize >= n.saturating_mul(100))
        .unwrap_or(SIZES[SIZES.len() - 1])
}

/// The lookup table for `backends` (in the order given, which every node
/// must share: the translator's are sorted): for each of the `size_for(n)`
/// slots, the index of its backend. Empty without backends.
pub fn table(backends: &[(Ipv4Addr, u16)]) -> Vec<usize> {
    let n = backends.len();
    if n == 0 {
        return vec![];
    }
    let m = u64::from(size_for(n));
    // Each backend's permutation: offset + j × skip (mod M), skip ≠ 0.
    let perms: Vec<(u64, u64)> = backends
        .iter()
        .map(|(addr, port)| {
            let name = format!("{addr}:{port}");
            let offset = fnv1a(name.as_bytes(), FNV_OFFSET) % m;
            let skip = fnv1a(name.as_bytes(), FNV_OFFSET_2) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; n];
    let mut entry: Vec<Option<usize>> = vec![None; m as usize];
    let mut filled = 0u64;
    'fill: loop {
        for (i, (offset, skip)) in perms.iter().enumerate() {
            // Backend i takes its next preferred slot still free.
            let mut c = (offset + next[i] * skip) % m;
            while entry[c as usize].is_some() {
                next[i] += 1;
                c = (offset + next[i] * skip) % m;
            }
            entry[c as usize] = Some(i);
            next[i] += 1;
            filled += 1;
            if filled == m {
                break 'fill;
            }
        }
    }
    entry.into_iter().map(|e| e.unwrap_or(0)).collect()
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// A second offset basis, for the independent second hash.
const FNV_OFFSET_2: u64 = 0x8422_2325_cbf2_9ce4;

/// FNV-1a, 64 bits, from `basis`.
fn fnv1a(bytes: &[u8], basis: u64) -> u64 {
    bytes.iter().fold(basis, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(n: u8) -> Vec<(Ipv4Addr, u16)> {
        (1..=n)
            .map(|i| (Ipv4Addr::new(10, 244, 1, i), 8080))
            .collect()
    }

    #[test]
    fn every_backend_holds_about_its_share() {
        for n in [1u8, 2, 3, 7, 10, 50] {
            let t = table(&backends(n));
            assert_eq!(t.len() as u32, size_for(n as usize));
            let mut counts = vec![0usize; n as usize];
            for i in &t {
                counts[*i] += 1;
            }
            let share = t.len() as f64 / f64::from(n);
            for c in counts {
                // Maglev's fill gives each backend ⌊M/N⌋ or ⌈M/N⌉ slots.
                assert!((c as f64 - share).abs() <= 1.0, "n={n}: {c} vs {share:.1}");
            }
        }
    }

    /// The slots whose backend (by address) differs between two tables.
    fn moved(a: &[(Ipv4Addr, u16)], b: &[(Ipv4Addr, u16)]) -> f64 {
        let (ta, tb) = (table(a), table(b));
        assert_eq!(ta.len(), tb.len());
        let changed = ta.iter().zip(&tb).filter(|(x, y)| a[**x] != b[**y]).count();
        changed as f64 / ta.len() as f64
    }

    #[test]
    fn removing_or_adding_one_backend_moves_about_one_nth() {
        let all = backends(10);
        // One of 10 removed: its tenth must move; little else does.
        let mut fewer = all.clone();
        fewer.remove(4);
        let m = moved(&all, &fewer);
        assert!((0.1..0.16).contains(&m), "removing moved {m:.3}");
        // One added to 9: an eleventh-ish moves to it.
        let m = moved(&fewer, &all);
        assert!((0.1..0.16).contains(&m), "adding moved {m:.3}");
    }

    #[test]
    fn the_table_depends_only_on_the_backends() {
        let b = backends(5);
        assert_eq!(table(&b), table(&b.clone()));
        // Fixed hash functions: a table pinned here must never change, or
        // nodes running different agent versions would disagree.
        let t = table(&backends(3));
        assert_eq!(&t[..12], &[1, 2, 2, 0, 2, 2, 1, 1, 1, 1, 0, 0][..]);
        assert!(table(&[]).is_empty());
    }

    #[test]
    fn sizes_follow_the_backend_count() {
        assert_eq!(size_for(1), 251);
        assert_eq!(size_for(3), 1_021);
        assert_eq!(size_for(40), 4_093);
        assert_eq!(size_for(100), 16_381);
        assert_eq!(size_for(10_000), 16_381);
    }
}
