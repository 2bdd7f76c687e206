//! Hard eviction thresholds (`--eviction-hard`), as the kubelet spells
//! them: `memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%`
//! (its defaults). A threshold is a quantity or a percentage of capacity;
//! the node reports MemoryPressure or DiskPressure while the measured
//! signal is below it (this kubelet reports the conditions; it does not
//! evict pods itself). Build and CI machines whose disks are mostly build
//! output set lower ones (`nodefs.available<1%`), as kind and k3d users do.
//!
//! `imagefs.*` signals are refused rather than ignored: images live in
//! containerd's own directory, which this kubelet does not measure.

use std::{fmt, str::FromStr};

/// One threshold: an absolute amount or a fraction of capacity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Threshold {
    Amount(u64),
    Fraction(f64),
}

impl Threshold {
    /// Whether `available` out of `capacity` is under the threshold.
    pub fn crossed(self, available: u64, capacity: u64) -> bool {
        match self {
            Threshold::Amount(a) => available < a,
            Threshold::Fraction(f) => (available as f64) < f * capacity as f64,
        }
    }
}

/// The thresholds the node's pressure conditions follow.
#[derive(Clone, Debug, PartialEq)]
pub struct EvictionHard {
    pub memory_available: Option<Threshold>,
    pub nodefs_available: Option<Threshold>,
    pub nodefs_inodes_free: Option<Threshold>,
}

impl Default for EvictionHard {
    fn default() -> Self {
        Self::DEFAULT.parse().expect("the kubelet's defaults parse")
    }
}

impl EvictionHard {
    /// The kubelet's default `--eviction-hard` (without imagefs).
    pub const DEFAULT: &'static str =
        "memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%";
}

/// A threshold list that does not parse.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EvictionError {
    #[error("eviction threshold {0:?}: expected <signal><<quantity or percentage>")]
    Syntax(String),
    #[error(
        "eviction signal {0:?} is not supported (memory.available, nodefs.available, nodefs.inodesFree)"
    )]
    Signal(String),
    #[error("eviction threshold {0:?}: {1}")]
    Value(String, String),
}

fn threshold(item: &str, value: &str, inodes: bool) -> Result<Threshold, EvictionError> {
    let bad = |why: &str| EvictionError::Value(item.to_owned(), why.to_owned());
    if let Some(p) = value.strip_suffix('%') {
        let p: f64 = p.parse().map_err(|_| bad("not a percentage"))?;
        if !(0.0..=100.0).contains(&p) {
            return Err(bad("a percentage must be between 0% and 100%"));
        }
        return Ok(Threshold::Fraction(p / 100.0));
    }
    let milli = rudder_k8s::quantity::parse_milli(value).map_err(|e| bad(&e.to_string()))?;
    if milli < 0 {
        return Err(bad("must not be negative"));
    }
    let amount = u64::try_from(milli / 1000).map_err(|_| bad("too large"))?;
    if inodes && milli % 1000 != 0 {
        return Err(bad("an inode count is a whole number"));
    }
    Ok(Threshold::Amount(amount))
}

impl FromStr for EvictionHard {
    type Err = EvictionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = EvictionHard {
            memory_available: None,
            nodefs_available: None,
            nodefs_inodes_free: None,
        };
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (signal, value) = item
                .split_once('<')
                .ok_or_else(|| EvictionError::Syntax(item.to_owned()))?;
            let (slot, inodes) = match signal.trim() {
                "memory.available" => (&mut out.memory_available, false),
                "nodefs.available" => (&mut out.nodefs_available, false),
                "nodefs.inodesFree" => (&mut out.nodefs_inodes_free, true),
                other => return Err(EvictionError::Signal(other.to_owned())),
            };
            *slot = Some(threshold(item, value.trim(), inodes)?);
        }
        Ok(out)
    }
}

impl fmt::Display for EvictionHard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [
            ("memory.available", self.memory_available),
            ("nodefs.available", self.nodefs_available),
            ("nodefs.inodesFree", self.nodefs_inodes_free),
        ];
        let mut first = true;
        for (name, t) in parts {
            let Some(t) = t else { continue };
            if !first {
                f.write_str(",")?;
            }
            first = false;
            match t {
                Threshold::Amount(a) => write!(f, "{name}<{a}")?,
                Threshold::Fraction(x) => write!(f, "{name}<{}%", x * 100.0)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubelet_defaults_and_overrides_parse() {
        let d = EvictionHard::default();
        assert_eq!(
            d.memory_available,
            Some(Threshold::Amount(100 * 1024 * 1024))
        );
        assert_eq!(d.nodefs_available, Some(Threshold::Fraction(0.10)));
        assert_eq!(d.nodefs_inodes_free, Some(Threshold::Fraction(0.05)));
        let e: EvictionHard = "nodefs.available<1%, memory.available<50Mi"
            .parse()
            .unwrap();
        assert_eq!(e.nodefs_available, Some(Threshold::Fraction(0.01)));
        assert_eq!(e.nodefs_inodes_free, None);
        assert_eq!(
            e.to_string(),
            "memory.available<52428800,nodefs.available<1%"
        );
        assert_eq!(e.to_string().parse::<EvictionHard>().unwrap(), e);
        assert_eq!("".parse::<EvictionHard>().unwrap().memory_available, None);
    }

    #[test]
    fn bad_thresholds_are_refused_clearly() {
        assert!(
            matches!("imagefs.available<15%".parse::<EvictionHard>(), Err(EvictionError::Signal(s)) if s == "imagefs.available")
        );
        assert!(matches!(
            "nodefs.available=10%".parse::<EvictionHard>(),
            Err(EvictionError::Syntax(_))
        ));
        assert!(matches!(
            "nodefs.available<150%".parse::<EvictionHard>(),
            Err(EvictionError::Value(..))
        ));
        assert!(matches!(
            "memory.available<-1Mi".parse::<EvictionHard>(),
            Err(EvictionError::Value(..))
        ));
        assert!(matches!(
            "nodefs.inodesFree<1500m".parse::<EvictionHard>(),
            Err(EvictionError::Value(..))
        ));
        assert!(matches!(
            "memory.available<lots".parse::<EvictionHard>(),
            Err(EvictionError::Value(..))
        ));
    }

    #[test]
    fn thresholds_compare_amounts_and_fractions() {
        assert!(Threshold::Fraction(0.1).crossed(9, 100));
        assert!(!Threshold::Fraction(0.1).crossed(10, 100));
        assert!(Threshold::Amount(100).crossed(99, 0));
        assert!(!Threshold::Amount(100).crossed(100, 0));
        assert!(!Threshold::Fraction(0.0).crossed(0, 100));
    }
}
