//! Per-worker recording: the only stats code on the request path.
//!
//! Each worker thread owns its recorders (a thread-local vector indexed by
//! pool slot), so recording is a plain histogram increment with no atomics
//! and no locks. Every resolution tick the worker turns what it recorded into
//! compact [`Second`]s and sends them to the control path, then resets.

use super::{
    ClientKind, ErrorKind, MirrorKind, Second, StatusClass, CLIENT_KINDS, ERROR_KINDS, MIRROR_KINDS, STATUS_CLASSES,
};
use hdrhistogram::Histogram;
use std::cell::RefCell;

/// Lowest and highest latency recorded, in microseconds (1 µs to 60 s).
pub(super) const LOW_US: u64 = 1;
pub(super) const HIGH_US: u64 = 60_000_000;
/// Significant digits kept.
pub(super) const SIGFIG: u8 = 3;

/// A histogram with the bounds above. Workers count in `u32` (a tick never
/// sees 4 billion requests; half the memory), the control path in `u64`.
#[allow(clippy::expect_used)]
pub(super) fn histogram<C: hdrhistogram::Counter>() -> Histogram<C> {
    // Constant bounds that hdrhistogram accepts (low >= 1, high >= 2 * low, sigfig <= 5).
    Histogram::new_with_bounds(LOW_US, HIGH_US, SIGFIG).expect("valid constant histogram bounds")
}

struct Recorder {
    latency: Histogram<u32>,
    status: [u64; STATUS_CLASSES],
    errors: [u64; ERROR_KINDS],
    client: [u64; CLIENT_KINDS],
    mirror: [u64; MIRROR_KINDS],
    requests: u64,
}

thread_local! {
    static RECORDERS: RefCell<Vec<Option<Recorder>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's recorder of pool `slot`.
fn with_recorder(slot: usize, f: impl FnOnce(&mut Recorder)) {
    RECORDERS.with(|r| {
        let mut r = r.borrow_mut();
        if r.len() <= slot {
            r.resize_with(slot + 1, || None);
        }
        f(r[slot].get_or_insert_with(|| Recorder {
            latency: histogram(),
            status: [0; STATUS_CLASSES],
            errors: [0; ERROR_KINDS],
            client: [0; CLIENT_KINDS],
            mirror: [0; MIRROR_KINDS],
            requests: 0,
        }))
    })
}

/// Records a client fault against pool `slot` on this thread.
pub(super) fn record_client(slot: usize, kind: ClientKind) {
    with_recorder(slot, |rec| rec.client[kind as usize] += 1);
}

/// Records a mirrored copy's outcome against pool `slot` on this thread.
pub(super) fn record_mirror(slot: usize, kind: MirrorKind) {
    with_recorder(slot, |rec| {
        if kind == MirrorKind::Mismatched {
            rec.mirror[MirrorKind::Compared as usize] += 1;
        }
        rec.mirror[kind as usize] += 1;
    });
}

/// Records one request against pool `slot` on this thread.
pub(super) fn record(slot: usize, latency_us: u64, status: StatusClass, error: Option<ErrorKind>) {
    with_recorder(slot, |rec| {
        rec.latency.saturating_record(latency_us.clamp(LOW_US, HIGH_US));
        rec.status[status as usize] += 1;
        if let Some(e) = error {
            rec.errors[e as usize] += 1;
        }
        rec.requests += 1;
    });
}

/// Takes everything recorded on this thread since the last call.
pub(super) fn take() -> Vec<(usize, Second)> {
    RECORDERS.with(|r| {
        let mut r = r.borrow_mut();
        let mut out = Vec::new();
        for (slot, rec) in r.iter_mut().enumerate() {
            let Some(rec) = rec else { continue };
            if rec.requests == 0 && rec.client == [0; CLIENT_KINDS] && rec.mirror == [0; MIRROR_KINDS] {
                continue;
            }
            let latencies =
                rec.latency.iter_recorded().map(|v| (v.value_iterated_to(), u64::from(v.count_at_value()))).collect();
            out.push((
                slot,
                Second {
                    at: 0,
                    latencies,
                    status: rec.status,
                    errors: rec.errors,
                    client: rec.client,
                    mirror: rec.mirror,
                    requests: rec.requests,
                },
            ));
            rec.latency.reset();
            rec.status = [0; STATUS_CLASSES];
            rec.errors = [0; ERROR_KINDS];
            rec.client = [0; CLIENT_KINDS];
            rec.mirror = [0; MIRROR_KINDS];
            rec.requests = 0;
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SDK's harness records latencies as this histogram does (one
    /// definition of a window's p50..p999 for host and harness).
    #[test]
    fn the_sdk_records_latencies_as_the_histogram_does() {
        let mut h = histogram::<u64>();
        for us in (0..5_000).chain((5_000..70_000_000).step_by(9_973)) {
            let v = us.clamp(LOW_US, HIGH_US);
            h.record(v).unwrap();
            let recorded = h.iter_recorded().find(|r| r.count_at_value() > 0).unwrap().value_iterated_to();
            assert_eq!(switchyard_sdk::recorded_us(us), recorded, "{us} µs");
            h.reset();
        }
    }
}
