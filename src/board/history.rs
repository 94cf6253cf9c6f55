//! Recent power per sensor for the status page's sparklines: a ring of fixed size, filled at
//! the sample rate (averaged into points at least a second apart), allocated once.

/// Points a history holds: at one point a second, twelve minutes.
pub const POINTS: usize = 720;

/// One point: when (Unix time, the middle of its samples) and the mean power.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Unix time.
    pub(crate) unix: f64,
    /// Watts; NaN when the shunt saturated during the point.
    pub(crate) watts: f32,
}

/// Samples being averaged into the next point.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    first: f64,
    last: f64,
    sum: f64,
    count: u32,
    saturated: bool,
}

/// A ring of the last [`POINTS`] points.
#[derive(Debug)]
pub(crate) struct History {
    ring: Box<[Point]>,
    /// The next slot to write.
    next: usize,
    len: usize,
    resolution: f64,
    bucket: Option<Bucket>,
}

impl History {
    /// An empty history whose points are at least `resolution` seconds apart.
    pub(crate) fn new(resolution: f64) -> History {
        History {
            ring: vec![
                Point {
                    unix: 0.0,
                    watts: 0.0
                };
                POINTS
            ]
            .into_boxed_slice(),
            next: 0,
            len: 0,
            resolution: resolution.max(1.0),
            bucket: None,
        }
    }

    /// The seconds between points at least.
    pub(crate) fn resolution(&self) -> f64 {
        self.resolution
    }

    /// The bytes it holds, whatever it holds.
    pub(crate) fn footprint(&self) -> usize {
        std::mem::size_of::<History>() + std::mem::size_of_val(&*self.ring)
    }

    fn push(&mut self, point: Point) {
        self.ring[self.next] = point;
        self.next = (self.next + 1) % POINTS;
        self.len = (self.len + 1).min(POINTS);
    }

    /// Count a sample of `watts` at `unix` (NaN: the shunt saturated).
    pub(crate) fn record(&mut self, unix: f64, watts: f64) {
        if let Some(b) = &mut self.bucket {
            // Points on a grid of `resolution` seconds: samples in one slot are one point.
            let slot = |t: f64| (t / self.resolution).floor();
            if slot(unix) == slot(b.first) && unix >= b.last {
                b.last = unix;
                if watts.is_nan() {
                    b.saturated = true;
                } else {
                    b.sum += watts;
                    b.count += 1;
                }
                return;
            }
            let b = *b;
            self.push(Point {
                unix: (b.first + b.last) / 2.0,
                watts: if b.saturated || b.count == 0 {
                    f32::NAN
                } else {
                    (b.sum / f64::from(b.count)) as f32
                },
            });
        }
        self.bucket = Some(Bucket {
            first: unix,
            last: unix,
            sum: if watts.is_nan() { 0.0 } else { watts },
            count: u32::from(!watts.is_nan()),
            saturated: watts.is_nan(),
        });
    }

    /// The points after `since` (Unix time), oldest first.
    pub(crate) fn points_since(&self, since: f64) -> Vec<Point> {
        let start = (self.next + POINTS - self.len) % POINTS;
        (0..self.len)
            .map(|i| self.ring[(start + i) % POINTS])
            .filter(|p| p.unix > since)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_averaged_into_points_and_the_ring_keeps_the_last() {
        let mut h = History::new(1.0);
        // Four samples a second for a while.
        for i in 0..(4 * 2 * POINTS) {
            let t = 1000.0 + i as f64 * 0.25;
            h.record(t, if i % 2 == 0 { 10.0 } else { 20.0 });
        }
        let points = h.points_since(0.0);
        assert_eq!(points.len(), POINTS);
        assert!(points.iter().all(|p| p.watts == 15.0), "{:?}", &points[..3]);
        assert!(points
            .windows(2)
            .all(|w| (w[1].unix - w[0].unix - 1.0).abs() < 1e-9));
        // The newest point is the last complete second.
        let last = points.last().unwrap().unix;
        assert!(
            (last - (1000.0 + 2.0 * POINTS as f64 - 2.0 + 0.375)).abs() < 1e-9,
            "{last}"
        );
        assert_eq!(h.points_since(last - 2.5).len(), 3);
    }

    #[test]
    fn a_saturated_sample_makes_its_point_unknown() {
        let mut h = History::new(1.0);
        h.record(0.0, 5.0);
        h.record(0.5, f64::NAN);
        h.record(1.0, 7.0);
        h.record(2.0, 7.0);
        let points = h.points_since(-1.0);
        assert!(points[0].watts.is_nan());
        assert_eq!(points[1].watts, 7.0);
    }
}
