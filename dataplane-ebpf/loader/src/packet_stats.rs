//! The `packet-stats` tc classifier: counts Ethernet/VLAN/IPv4/TCP/UDP/ICMP
//! packets (and malformed ones) per CPU and passes every packet on unchanged.
//! It proves the BPF pipeline end to end on a node: build, load with BTF,
//! attach (TCX or clsact), read a per-CPU map.

use aya::{
    Ebpf,
    maps::PerCpuArray,
    programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions},
};
use rudder_ebpf_common::packet_stats::{COUNTERS, Counter, MAP_NAME, PROGRAM_NAME};

use super::{
    BpfError, PACKET_STATS_OBJECT, load_object,
    tc::{self, AttachMode, Attached, Direction},
};

const OBJECT: &str = "packet-stats";

/// The loaded program and its counters.
#[derive(Debug)]
pub struct PacketStats {
    ebpf: Ebpf,
}

/// Counter totals over all CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts([u64; COUNTERS as usize]);

impl Counts {
    pub fn get(&self, c: Counter) -> u64 {
        self.0[c.index() as usize]
    }

    /// The counters that grew from `before` to `self`.
    #[must_use]
    pub fn since(&self, before: &Counts) -> Counts {
        let mut d = Counts::default();
        for (i, v) in d.0.iter_mut().enumerate() {
            *v = self.0[i].saturating_sub(before.0[i]);
        }
        d
    }

    /// Non-zero counters as `(name, value)`, in index order.
    pub fn non_zero(&self) -> Vec<(&'static str, u64)> {
        Counter::ALL
            .iter()
            .filter(|c| self.get(**c) > 0)
            .map(|c| (c.name(), self.get(*c)))
            .collect()
    }
}

/// What one `BPF_PROG_TEST_RUN` of the classifier returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRunOutput {
    /// The tc verdict, as the kernel returned it.
    pub verdict: i32,
    /// The packet as the program left it.
    pub data: Vec<u8>,
}

impl PacketStats {
    /// Loads the embedded object and the classifier into the kernel (not
    /// attached anywhere yet).
    pub fn load() -> Result<Self, BpfError> {
        crate::lift_memlock();
        let mut ebpf = load_object(OBJECT, PACKET_STATS_OBJECT)?;
        let prog = classifier(&mut ebpf)?;
        prog.load().map_err(|e| program_error("load", e))?;
        Ok(Self { ebpf })
    }

    /// Attaches the classifier to `iface` in the calling thread's network
    /// namespace. The attachment lasts as long as `self`.
    pub fn attach(
        &mut self,
        iface: &str,
        direction: Direction,
        mode: AttachMode,
    ) -> Result<Attached, BpfError> {
        let prog = classifier(&mut self.ebpf)?;
        tc::attach(prog, PROGRAM_NAME, iface, direction, mode)
    }

    /// Sums each counter over all CPUs.
    pub fn counts(&self) -> Result<Counts, BpfError> {
        let map = self.ebpf.map(MAP_NAME).ok_or(BpfError::NoMap {
            object: OBJECT,
            map: MAP_NAME,
        })?;
        let array = PerCpuArray::<_, u64>::try_from(map).map_err(|e| map_error("open", e))?;
        let mut counts = Counts::default();
        for c in Counter::ALL {
            let per_cpu = array
                .get(&c.index(), 0)
                .map_err(|e| map_error(&format!("read counter {}", c.name()), e))?;
            counts.0[c.index() as usize] = per_cpu.iter().sum();
        }
        Ok(counts)
    }

    /// Runs the classifier once on `packet` through `BPF_PROG_TEST_RUN`.
    pub fn test_run(&mut self, packet: &[u8]) -> Result<TestRunOutput, BpfError> {
        let prog = classifier(&mut self.ebpf)?;
        // The kernel may grow the packet to the minimum Ethernet length; leave
        // room for that and any headroom the program could add.
        let mut out = vec![0u8; packet.len() + 256];
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(packet),
                data_out: Some(&mut out),
                ..TestRunOptions::default()
            })
            .map_err(|e| program_error("BPF_PROG_TEST_RUN", e))?;
        out.truncate(result.data_size_out as usize);
        Ok(TestRunOutput {
            verdict: result.return_value as i32,
            data: out,
        })
    }
}

fn classifier(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, BpfError> {
    let prog = ebpf.program_mut(PROGRAM_NAME).ok_or(BpfError::NoProgram {
        object: OBJECT,
        program: PROGRAM_NAME,
    })?;
    prog.try_into()
        .map_err(|e| program_error("open as a tc classifier", e))
}

fn program_error(action: &str, e: ProgramError) -> BpfError {
    BpfError::Program {
        program: PROGRAM_NAME,
        action: action.to_string(),
        source: Box::new(e),
    }
}

fn map_error(action: &str, e: aya::maps::MapError) -> BpfError {
    BpfError::Map {
        map: MAP_NAME,
        action: action.to_string(),
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_subtracts_and_non_zero_names() {
        let mut a = Counts::default();
        let mut b = Counts::default();
        a.0[Counter::Packets.index() as usize] = 5;
        b.0[Counter::Packets.index() as usize] = 8;
        b.0[Counter::Udp.index() as usize] = 2;
        let d = b.since(&a);
        assert_eq!(d.get(Counter::Packets), 3);
        assert_eq!(d.non_zero(), vec![("packets", 3), ("udp", 2)]);
    }
}
