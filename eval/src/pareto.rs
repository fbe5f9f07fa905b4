//! Pareto fronts and hypervolumes of points whose every coordinate is "higher is better"
//! (mean normalised head scores).
//!
//! The hypervolume of a set against a reference point r is the volume of the region that
//! some point of the set dominates and that dominates r: one number that grows when a front
//! moves out or fills in, which is how two controllers' fronts are compared. It is computed
//! exactly by slicing (HSO): sort by the last coordinate and sum the (d−1)-dimensional
//! volumes of the slabs between consecutive values. Exponential in d, fine for the few
//! heads a sweep varies.

/// Whether `a` dominates `b`: at least as good everywhere, better somewhere.
pub fn dominates(a: &[f64], b: &[f64]) -> bool {
    a.iter().zip(b).all(|(x, y)| x >= y) && a.iter().zip(b).any(|(x, y)| x > y)
}

/// Indices of the points no other point dominates (duplicates keep their first), ordered
/// by the first coordinate, then the second.
pub fn front(points: &[Vec<f64>]) -> Vec<usize> {
    let mut keep: Vec<usize> = (0..points.len())
        .filter(|&i| {
            let p = &points[i];
            !points.iter().enumerate().any(|(j, q)| dominates(q, p) || (j < i && q == p))
        })
        .collect();
    keep.sort_by(|&a, &b| {
        let (p, q) = (&points[a], &points[b]);
        p.iter().zip(q.iter()).map(|(x, y)| x.total_cmp(y)).find(|o| o.is_ne()).unwrap_or(std::cmp::Ordering::Equal)
    });
    keep
}

/// The hypervolume `points` dominate above `reference` (points not above the reference
/// in every coordinate add nothing).
pub fn hypervolume(points: &[Vec<f64>], reference: &[f64]) -> f64 {
    let clipped: Vec<Vec<f64>> = points
        .iter()
        .filter(|p| p.len() == reference.len() && p.iter().zip(reference).all(|(x, r)| x > r))
        .cloned()
        .collect();
    slice(clipped, reference)
}

fn slice(mut pts: Vec<Vec<f64>>, r: &[f64]) -> f64 {
    let d = r.len();
    if pts.is_empty() || d == 0 {
        return 0.0;
    }
    if d == 1 {
        return pts.iter().map(|p| p[0] - r[0]).fold(0.0, f64::max);
    }
    // slabs along the last coordinate, from the top down: between consecutive values, the
    // points at or above the slab's top dominate a (d-1)-volume that is constant
    pts.sort_by(|a, b| b[d - 1].total_cmp(&a[d - 1]));
    let mut volume = 0.0;
    for i in 0..pts.len() {
        let top = pts[i][d - 1];
        let bottom = pts.get(i + 1).map_or(r[d - 1], |p| p[d - 1]);
        if top <= bottom {
            continue;
        }
        let above: Vec<Vec<f64>> = pts[..=i].iter().map(|p| p[..d - 1].to_vec()).collect();
        volume += slice(above, &r[..d - 1]) * (top - bottom);
    }
    volume
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(p: &[[f64; 2]]) -> Vec<Vec<f64>> {
        p.iter().map(|x| x.to_vec()).collect()
    }

    #[test]
    fn the_front_drops_dominated_and_duplicate_points() {
        let pts = v(&[[0.2, 0.9], [0.5, 0.5], [0.4, 0.4], [0.9, 0.1], [0.5, 0.5], [0.1, 0.8]]);
        assert_eq!(front(&pts), vec![0, 1, 3]);
        assert!(dominates(&[0.5, 0.5], &[0.4, 0.4]));
        assert!(!dominates(&[0.5, 0.5], &[0.5, 0.5]));
        assert!(!dominates(&[0.9, 0.1], &[0.2, 0.9]));
    }

    #[test]
    fn hypervolume_of_staircases_and_boxes() {
        // one point: its box
        assert!((hypervolume(&v(&[[0.5, 0.4]]), &[0.0, 0.0]) - 0.2).abs() < 1e-12);
        // a staircase: 0.2·0.9 + (0.5−0.2)·0.5 + (0.9−0.5)·0.1
        let hv = hypervolume(&v(&[[0.2, 0.9], [0.5, 0.5], [0.9, 0.1], [0.4, 0.4]]), &[0.0, 0.0]);
        assert!((hv - (0.18 + 0.15 + 0.04)).abs() < 1e-12, "{hv}");
        // against another reference, points below it add nothing
        let hv = hypervolume(&v(&[[0.2, 0.9], [0.5, 0.5], [0.9, 0.1]]), &[0.3, 0.2]);
        assert!((hv - 0.2 * 0.3).abs() < 1e-12, "{hv}");
        // 3-D: two boxes overlapping in [0,.5]x[0,.5]x[0,.5]
        let hv = hypervolume(&[vec![1.0, 0.5, 0.5], vec![0.5, 1.0, 1.0]], &[0.0, 0.0, 0.0]);
        assert!((hv - (0.25 + 0.5 - 0.125)).abs() < 1e-12, "{hv}");
        assert_eq!(hypervolume(&[], &[0.0, 0.0]), 0.0);
    }

    #[test]
    fn a_front_that_moves_out_has_more_hypervolume() {
        let a = v(&[[0.2, 0.8], [0.6, 0.4]]);
        let b = v(&[[0.25, 0.8], [0.6, 0.45], [0.8, 0.1]]);
        assert!(hypervolume(&b, &[0.0, 0.0]) > hypervolume(&a, &[0.0, 0.0]));
    }
}
