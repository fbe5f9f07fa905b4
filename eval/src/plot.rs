//! Plots of evaluations (the `plotters` crate): a sweep's Pareto fronts, and reward against
//! tokens spent. Each plot is written as PNG and SVG; text uses DejaVu Sans, embedded in the
//! binary (no system fonts needed).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::compare::ComparePoint;
use crate::sweep::SweepReport;

const FONT: &str = "sans-serif";
const BLUE: RGBColor = RGBColor(47, 111, 222);
const ORANGE: RGBColor = RGBColor(230, 126, 34);
const GREEN: RGBColor = RGBColor(39, 174, 96);
const GREY: RGBColor = RGBColor(60, 60, 60);

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // the font is valid (a test renders with it); a failure only loses the labels
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, include_bytes!("../assets/DejaVuSans.ttf"));
    });
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("plot: {e:?}")
}

/// A chart that can be drawn on any backend.
trait Chart {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> anyhow::Result<()>;
}

struct Fronts<'a>(&'a SweepReport);
struct Spent<'a>(&'a [ComparePoint]);

impl Chart for Fronts<'_> {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> anyhow::Result<()> {
        front_chart(root, self.0)
    }
}

impl Chart for Spent<'_> {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> anyhow::Result<()> {
        compare_chart(root, self.0)
    }
}

/// Draw `chart` into `<stem>.png` and `<stem>.svg`; the two paths.
fn save(stem: &Path, size: (u32, u32), chart: &impl Chart) -> anyhow::Result<[std::path::PathBuf; 2]> {
    register_font();
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    {
        let root = BitMapBackend::new(&png, size).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        chart.draw(root.clone())?;
        root.present().map_err(err)?;
    }
    {
        let root = SVGBackend::new(&svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        chart.draw(root.clone())?;
        root.present().map_err(err)?;
    }
    Ok([png, svg])
}

fn span(values: impl Iterator<Item = f64>, pad: f64, floor: f64, ceil: f64) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        return (floor, ceil);
    }
    let pad = ((hi - lo) * pad).max(0.02);
    ((lo - pad).max(floor), (hi + pad).min(ceil))
}

fn front_chart<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, r: &SweepReport) -> anyhow::Result<()> {
    let (hx, hy) = (&r.heads[0], r.heads.get(1).unwrap_or(&r.heads[0]));
    let all: Vec<Vec<f64>> = r.points.iter().chain(&r.best_of_n).chain(r.greedy.iter()).map(|m| r.coords(m)).collect();
    let (x0, x1) = span(all.iter().map(|p| p[0]), 0.08, 0.0, 1.0);
    let (y0, y1) = span(all.iter().map(|p| p[p.len().min(2) - 1]), 0.08, 0.0, 1.0);
    let title = format!("{}: {} vs {} (labels: weight of {})", r.controller, hx, hy, hx);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(format!("mean normalised {hx}"))
        .y_desc(format!("mean normalised {hy}"))
        .label_style((FONT, 14))
        .draw()
        .map_err(err)?;
    let xy = |m: &crate::measure::Measured| {
        let c = r.coords(m);
        (c[0], c[c.len().min(2) - 1])
    };
    let mut series = |ms: &[crate::measure::Measured], front: &[usize], color: RGBColor, name: String| -> anyhow::Result<()> {
        if ms.is_empty() {
            return Ok(());
        }
        chart.draw_series(ms.iter().map(|m| Circle::new(xy(m), 4, color.filled()))).map_err(err)?.label(name).legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
        chart.draw_series(LineSeries::new(front.iter().map(|&i| xy(&ms[i])), color.stroke_width(2))).map_err(err)?;
        Ok(())
    };
    series(&r.points, &r.front.indices, BLUE, format!("{} (front hv {:.3})", r.controller, r.front.hypervolume))?;
    let bon = r.best_of_n_n.map_or(String::new(), |n| format!(" N={n}"));
    series(&r.best_of_n, &r.best_of_n_front.indices, ORANGE, format!("best_of_n{bon}, equal tokens (hv {:.3})", r.best_of_n_front.hypervolume))?;
    // each of the controller's points says its first head's weight
    chart
        .draw_series(r.points.iter().map(|m| {
            let w = m.weights.get(hx).copied().unwrap_or(0.0);
            EmptyElement::at(xy(m)) + Text::new(format!("{w:.2}"), (7, -16), (FONT, 12).into_font().color(&BLUE))
        }))
        .map_err(err)?;
    if let Some(g) = &r.greedy {
        chart.draw_series(std::iter::once(Cross::new(xy(g), 7, GREY.stroke_width(3)))).map_err(err)?.label("greedy").legend(|(x, y)| Cross::new((x + 10, y), 5, GREY.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        // upper right: beyond every front (both axes are "higher is better"), so usually empty
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .draw()
        .map_err(err)?;
    Ok(())
}

/// The sweep's fronts (the first two heads) as `<stem>.png` and `<stem>.svg`.
pub fn front(r: &SweepReport, stem: &Path) -> anyhow::Result<[std::path::PathBuf; 2]> {
    if r.heads.is_empty() || r.points.iter().chain(&r.best_of_n).chain(r.greedy.iter()).next().is_none() {
        anyhow::bail!("a sweep without heads or points has no front");
    }
    save(stem, (900, 680), &Fronts(r))
}

fn compare_chart<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, points: &[ComparePoint]) -> anyhow::Result<()> {
    let (x0, x1) = span(points.iter().map(|p| p.measured.tokens_generated.max(1.0)), 0.0, 1.0, f64::INFINITY);
    let (y0, y1) = span(points.iter().map(|p| p.measured.reward.unwrap_or(0.0)), 0.1, 0.0, 1.0);
    let mut chart = ChartBuilder::on(&root)
        .caption("reward against tokens spent (equal prompts and weights)", (FONT, 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((x0 * 0.8..x1 * 1.25).log_scale(), y0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("tokens generated per prompt (log scale)")
        .y_desc("mean reward")
        .x_labels(8)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style((FONT, 14))
        .draw()
        .map_err(err)?;
    let xy = |p: &ComparePoint| (p.measured.tokens_generated.max(1.0), p.measured.reward.unwrap_or(0.0));
    for (family, color) in [("best_of_n", ORANGE), ("args", GREEN), ("deal", BLUE)] {
        let mut pts: Vec<(f64, f64)> = points.iter().filter(|p| p.family == family).map(xy).collect();
        if pts.is_empty() {
            continue;
        }
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2))).map_err(err)?.label(family).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled()))).map_err(err)?;
        // each point says its size (N=8, k=4, k=4 l=2)
        chart
            .draw_series(points.iter().filter(|p| p.family == family).map(|p| {
                let size = p.measured.label.strip_prefix(family).unwrap_or(&p.measured.label).trim().to_string();
                EmptyElement::at(xy(p)) + Text::new(size, (7, -16), (FONT, 12).into_font().color(&color))
            }))
            .map_err(err)?;
    }
    if let Some(g) = points.iter().find(|p| p.family == "greedy") {
        chart.draw_series(std::iter::once(Cross::new(xy(g), 7, GREY.stroke_width(3)))).map_err(err)?.label("greedy").legend(|(x, y)| Cross::new((x + 10, y), 5, GREY.stroke_width(2)));
    }
    chart.configure_series_labels().position(SeriesLabelPosition::LowerRight).background_style(WHITE.mix(0.85)).border_style(BLACK).label_font((FONT, 14)).draw().map_err(err)?;
    Ok(())
}

/// Reward against tokens spent, one line per family, as `<stem>.png` and `<stem>.svg`.
pub fn compare(points: &[ComparePoint], stem: &Path) -> anyhow::Result<[std::path::PathBuf; 2]> {
    if points.is_empty() {
        anyhow::bail!("a comparison without points has nothing to plot");
    }
    save(stem, (900, 620), &Spent(points))
}
