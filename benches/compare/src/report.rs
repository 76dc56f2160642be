//! Results: medians over repetitions, the Markdown tables, CSV files and charts.

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::{Series, MAIN};

/// A row of the table, a chart.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Figure {
    Conn1x64,
    Conn8x8,
    Conn16x64,
    Multi1x64,
    Multi8x8,
    Latency,
    LatencyP99,
    LatencyPinned,
    Bulk,
    Connect,
    ConnectCpu,
    CpuPerCall,
    AllocsPerCall,
    BytesPerCall,
    MultiCpuPerCall,
}

pub const FIGURES: [Figure; 15] = [
    Figure::Conn1x64,
    Figure::Conn8x8,
    Figure::Conn16x64,
    Figure::Multi1x64,
    Figure::Multi8x8,
    Figure::Latency,
    Figure::LatencyP99,
    Figure::LatencyPinned,
    Figure::Bulk,
    Figure::Connect,
    Figure::ConnectCpu,
    Figure::CpuPerCall,
    Figure::AllocsPerCall,
    Figure::BytesPerCall,
    Figure::MultiCpuPerCall,
];

impl Figure {
    pub fn title(self) -> &'static str {
        match self {
            Figure::Conn1x64 => "1 connection × 64 in flight, calls/s",
            Figure::Conn8x8 => "8 connections × 8 in flight, calls/s",
            Figure::Conn16x64 => "16 connections × 64 in flight (1,024), calls/s",
            Figure::Multi1x64 => "1 connection × 64 in flight, multi-thread runtimes, calls/s",
            Figure::Multi8x8 => "8 connections × 8 in flight, multi-thread runtimes, calls/s",
            Figure::Latency => "sequential latency, median, µs",
            Figure::LatencyP99 => "sequential latency, p99, µs",
            Figure::LatencyPinned => "sequential latency, both threads on one core, median, µs",
            Figure::Bulk => "10 MB `Vec<u8>` argument, MB/s",
            Figure::Connect => "connect + first call, median, µs",
            Figure::ConnectCpu => "CPU per connect + first call (user+sys, both ends), µs",
            Figure::CpuPerCall => "CPU per call at 1 × 64 (user+sys, both ends), µs",
            Figure::AllocsPerCall => "allocations per call at 1 × 64 (both ends)",
            Figure::BytesPerCall => "bytes allocated per call at 1 × 64 (both ends)",
            Figure::MultiCpuPerCall => {
                "CPU per call at 1 × 64, multi-thread runtimes (user+sys, both ends), µs"
            }
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Figure::Conn1x64 => "throughput_1x64",
            Figure::Conn8x8 => "throughput_8x8",
            Figure::Conn16x64 => "throughput_16x64",
            Figure::Multi1x64 => "throughput_1x64_multi",
            Figure::Multi8x8 => "throughput_8x8_multi",
            Figure::Latency => "latency_median",
            Figure::LatencyP99 => "latency_p99",
            Figure::LatencyPinned => "latency_pinned",
            Figure::Bulk => "bulk_10mb",
            Figure::Connect => "connect_first_call",
            Figure::ConnectCpu => "cpu_per_connect",
            Figure::CpuPerCall => "cpu_per_call",
            Figure::AllocsPerCall => "allocs_per_call",
            Figure::BytesPerCall => "alloc_bytes_per_call",
            Figure::MultiCpuPerCall => "cpu_per_call_multi",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Figure::Conn1x64
            | Figure::Conn8x8
            | Figure::Conn16x64
            | Figure::Multi1x64
            | Figure::Multi8x8 => "calls/s",
            Figure::Latency | Figure::LatencyP99 | Figure::LatencyPinned | Figure::Connect => "µs",
            Figure::CpuPerCall | Figure::MultiCpuPerCall => "µs CPU per call",
            Figure::ConnectCpu => "µs CPU per connect",
            Figure::Bulk => "MB/s",
            Figure::AllocsPerCall => "allocations per call",
            Figure::BytesPerCall => "bytes per call",
        }
    }

    pub fn higher_is_better(self) -> bool {
        matches!(
            self,
            Figure::Conn1x64
                | Figure::Conn8x8
                | Figure::Conn16x64
                | Figure::Multi1x64
                | Figure::Multi8x8
                | Figure::Bulk
        )
    }

    fn fmt(self, v: f64) -> String {
        match self {
            Figure::Conn1x64
            | Figure::Conn8x8
            | Figure::Conn16x64
            | Figure::Multi1x64
            | Figure::Multi8x8 => {
                format!("{}k", thousands(v / 1e3))
            }
            Figure::Bulk | Figure::BytesPerCall => thousands(v),
            Figure::Connect | Figure::ConnectCpu => format!("{v:.0}"),
            Figure::CpuPerCall | Figure::MultiCpuPerCall => format!("{v:.2}"),
            _ => format!("{v:.1}"),
        }
    }
}

/// `1234567.8` → `"1,234,568"`.
pub fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x.abs());
    let mut out = String::new();
    if x < 0.0 && s != "0" {
        out.push('-');
    }
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Every sample, by figure and series.
#[derive(Default)]
pub struct Results {
    samples: BTreeMap<(Figure, Series), Vec<(usize, f64)>>,
    /// Every timed sequential call (unpinned), all repetitions pooled, in µs.
    latencies: BTreeMap<Series, Vec<f64>>,
}

/// Percentiles of the pooled latency samples.
const PERCENTILES: [f64; 5] = [0.5, 0.9, 0.99, 0.999, 0.9999];

fn percentile_label(p: f64) -> String {
    let s = format!("{}", p * 100.0);
    format!("p{}", s.trim_end_matches(".0"))
}

/// Median, minimum and maximum of a series' samples.
#[derive(Clone, Copy)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Results {
    pub fn push(&mut self, f: Figure, s: Series, rep: usize, v: f64) {
        self.samples.entry((f, s)).or_default().push((rep, v));
    }

    pub fn latency_samples(&mut self, s: Series, mut v: Vec<f64>) {
        self.latencies.entry(s).or_default().append(&mut v);
    }

    fn latency_percentiles(&self) -> Vec<(Series, Vec<f64>)> {
        self.latencies
            .iter()
            .map(|(s, v)| {
                let mut v = v.clone();
                v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
                let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
                (*s, PERCENTILES.iter().map(|&q| at(q)).collect())
            })
            .collect()
    }

    pub fn last(&self, f: Figure, s: Series) -> f64 {
        self.samples
            .get(&(f, s))
            .and_then(|v| v.last())
            .map_or(f64::NAN, |x| x.1)
    }

    pub fn stat(&self, f: Figure, s: Series) -> Option<Stat> {
        let mut v: Vec<f64> = self.samples.get(&(f, s))?.iter().map(|x| x.1).collect();
        v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stat {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }

    /// `num ÷ den` in each repetition that measured both (infinite where only `den` is 0), and
    /// the median of those ratios: a repetition measures every series within seconds, so a
    /// machine whose speed changes from one repetition to the next moves both sides of each
    /// ratio, not one.
    pub fn paired_ratio(&self, f: Figure, num: Series, den: Series) -> Option<f64> {
        let (n, d) = (self.samples.get(&(f, num))?, self.samples.get(&(f, den))?);
        let mut ratios: Vec<f64> = n
            .iter()
            .filter_map(|&(rep, x)| {
                let &(_, y) = d.iter().find(|&&(r, _)| r == rep)?;
                Some(match (x, y) {
                    (x, y) if y > 0.0 => x / y,
                    (x, _) if x > 0.0 => f64::INFINITY,
                    _ => 1.0,
                })
            })
            .collect();
        if ratios.is_empty() {
            return None;
        }
        ratios.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        let k = ratios.len();
        Some(if k % 2 == 1 {
            ratios[k / 2]
        } else {
            (ratios[k / 2 - 1] + ratios[k / 2]) / 2.0
        })
    }

    fn cell(&self, f: Figure, s: Series) -> String {
        self.stat(f, s).map_or(String::new(), |st| f.fmt(st.median))
    }

    /// The figures table (medians) and the ratios table (rmi ÷ each).
    pub fn markdown(&self, notes: &BTreeMap<&'static str, String>) -> String {
        let mut md = String::new();
        let reps = notes.get("reps").cloned().unwrap_or_default();
        let placement = notes.get("placement").cloned().unwrap_or_default();
        let _ = writeln!(
            md,
            "Medians of {reps} repetitions; {placement} (but for the one-core latency row and the \
             multi-thread rows, whose workers are never pinned).\n"
        );
        let _ = writeln!(md, "| figure | raw | rawmux | tarpc | tonic | rmi |");
        let _ = writeln!(md, "|---|---|---|---|---|---|");
        for f in FIGURES {
            let mut row = format!("| {} |", f.title());
            for s in MAIN {
                let mut cell = self.cell(f, s);
                if f == Figure::Bulk && s == Series::Rmi {
                    let _ = write!(cell, " (msgpack: {})", self.cell(f, Series::RmiMsgpack));
                }
                let _ = write!(row, " {cell} |");
            }
            let _ = writeln!(md, "{row}");
            if f == Figure::Connect {
                let _ = writeln!(
                    md,
                    "| `PYRONAME:` lookup + connect + first call, median, µs | | | | | {} |",
                    self.cell(f, Series::RmiPyroname)
                );
                let _ = writeln!(
                    md,
                    "| the same, the resolver's watched cache on, median, µs | | | | | {} |",
                    self.cell(f, Series::RmiPyronameCached)
                );
            }
        }
        let pct = self.latency_percentiles();
        if !pct.is_empty() {
            let _ = writeln!(
                md,
                "\nSequential latency distribution, µs (every timed call of every repetition pooled):\n"
            );
            let head: Vec<String> = PERCENTILES.iter().map(|&p| percentile_label(p)).collect();
            let _ = writeln!(md, "| | {} |", head.join(" | "));
            let _ = writeln!(md, "|---|{}", "---|".repeat(head.len()));
            for (s, v) in &pct {
                let cells: Vec<String> = v.iter().map(|x| format!("{x:.1}")).collect();
                let _ = writeln!(md, "| {} | {} |", s.label(), cells.join(" | "));
            }
        }
        let _ = writeln!(
            md,
            "\nRatios, rmi ÷ each: in each repetition, then the median of those (rates: above 1 \
             means rmi is faster; times, CPU and allocations: above 1 means rmi costs more).\n"
        );
        let _ = writeln!(
            md,
            "| figure | better | rmi ÷ raw | rmi ÷ rawmux | rmi ÷ tarpc | rmi ÷ tonic |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|");
        let ratio_row = |md: &mut String, title: &str, f: Figure, num: Series| {
            if self.stat(f, num).is_none() {
                return;
            }
            let mut row = format!(
                "| {title} | {} |",
                if f.higher_is_better() {
                    "higher"
                } else {
                    "lower"
                }
            );
            for s in [Series::Raw, Series::RawMux, Series::Tarpc, Series::Tonic] {
                match self.paired_ratio(f, num, s) {
                    Some(r) if r < 1000.0 => {
                        let _ = write!(row, " {r:.2} |");
                    }
                    Some(_) => row.push_str(" > 1000 |"),
                    None => row.push_str(" |"),
                }
            }
            let _ = writeln!(md, "{row}");
        };
        for f in FIGURES {
            ratio_row(&mut md, f.title(), f, Series::Rmi);
            if f == Figure::Bulk {
                ratio_row(
                    &mut md,
                    "10 MB `Vec<u8>`, rmi msgpack, MB/s",
                    f,
                    Series::RmiMsgpack,
                );
            }
        }
        if let Some(p) = self.paired_ratio(Figure::Connect, Series::RmiPyroname, Series::Rmi) {
            let _ = writeln!(
                md,
                "\n`PYRONAME:` lookup + connect + first call ÷ rmi's direct connect + first call \
                 (per repetition, median): {p:.2}"
            );
            if let Some(c) =
                self.paired_ratio(Figure::Connect, Series::RmiPyronameCached, Series::Rmi)
            {
                let _ = writeln!(
                    md,
                    "\nThe same with the resolver's watched cache on: {c:.2}"
                );
            }
        }
        md
    }

    /// `results.csv` (every sample) and `summary.csv` (median, min, max, and rmi ÷ series as the
    /// median of the per-repetition ratios).
    pub fn write_csv(&self, dir: &Path) -> std::io::Result<()> {
        let mut all = String::from("figure,unit,series,rep,value\n");
        for ((f, s), v) in &self.samples {
            for (rep, x) in v {
                let _ = writeln!(all, "{},{},{},{rep},{x}", f.slug(), f.unit(), s.label());
            }
        }
        std::fs::write(dir.join("results.csv"), all)?;
        let mut sum =
            String::from("figure,unit,higher_is_better,series,median,min,max,rmi_over_series\n");
        for (f, s) in self.samples.keys() {
            let st = self.stat(*f, *s).expect("samples");
            let rmi_over = self.paired_ratio(*f, Series::Rmi, *s).unwrap_or(f64::NAN);
            let _ = writeln!(
                sum,
                "{},{},{},{},{},{},{},{}",
                f.slug(),
                f.unit(),
                f.higher_is_better(),
                s.label(),
                st.median,
                st.min,
                st.max,
                rmi_over
            );
        }
        std::fs::write(dir.join("summary.csv"), sum)?;
        let mut lat = String::from("series");
        for p in PERCENTILES {
            let _ = write!(lat, ",{}", percentile_label(p));
        }
        lat.push('\n');
        for (s, v) in self.latency_percentiles() {
            lat.push_str(s.label());
            for x in v {
                let _ = write!(lat, ",{x}");
            }
            lat.push('\n');
        }
        std::fs::write(dir.join("latency_percentiles.csv"), lat)
    }

    /// One bar chart per figure (median, with the min–max range of the repetitions), as PNG and
    /// SVG. Text needs a TrueType font: `RMI_COMPARE_FONT`, else DejaVu Sans or Liberation Sans
    /// from the usual places.
    pub fn charts(&self, dir: &Path) -> Result<Vec<PathBuf>, Box<dyn Error>> {
        register_font()?;
        let mut files = Vec::new();
        for f in FIGURES {
            let bars: Vec<(String, Stat, bool)> = [
                Series::Raw,
                Series::RawMux,
                Series::Tarpc,
                Series::Tonic,
                Series::Rmi,
                Series::RmiMsgpack,
                Series::RmiPyroname,
                Series::RmiPyronameCached,
            ]
            .into_iter()
            .filter_map(|s| {
                let st = self.stat(f, s)?;
                let rmi = matches!(
                    s,
                    Series::Rmi
                        | Series::RmiMsgpack
                        | Series::RmiPyroname
                        | Series::RmiPyronameCached
                );
                Some((s.label().to_owned(), st, rmi))
            })
            .collect();
            if bars.is_empty() {
                continue;
            }
            // Room for the labels ("rmi PYRONAME cached" is long): 160 pixels a bar.
            let size = ((160 * bars.len() as u32).max(800), 450);
            let png = dir.join(format!("{}.png", f.slug()));
            draw(BitMapBackend::new(&png, size).into_drawing_area(), f, &bars)?;
            files.push(png);
            let svg = dir.join(format!("{}.svg", f.slug()));
            draw(SVGBackend::new(&svg, size).into_drawing_area(), f, &bars)?;
            files.push(svg);
        }
        let pct = self.latency_percentiles();
        if !pct.is_empty() {
            let png = dir.join("latency_distribution.png");
            draw_distribution(
                BitMapBackend::new(&png, (800, 450)).into_drawing_area(),
                &pct,
            )?;
            files.push(png);
            let svg = dir.join("latency_distribution.svg");
            draw_distribution(SVGBackend::new(&svg, (800, 450)).into_drawing_area(), &pct)?;
            files.push(svg);
        }
        Ok(files)
    }
}

fn series_color(s: Series) -> RGBColor {
    match s {
        Series::Raw => RGBColor(0x55, 0x55, 0x55),
        Series::RawMux => RGBColor(0x4C, 0x72, 0xB0),
        Series::Tarpc => RGBColor(0x55, 0xA8, 0x68),
        Series::Tonic => RGBColor(0x81, 0x72, 0xB2),
        _ => RGBColor(0xE6, 0x6A, 0x1F),
    }
}

/// Latency by percentile (x: p50, p90, p99, p99.9, p99.99, evenly spaced; y: µs, log scale).
fn draw_distribution<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    pct: &[(Series, Vec<f64>)],
) -> Result<(), Box<dyn Error>>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let n = PERCENTILES.len();
    let lo = pct
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(f64::MAX, f64::min)
        * 0.8;
    let hi = pct
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0, f64::max)
        * 1.25;
    let mut chart = ChartBuilder::on(&root)
        .caption("sequential latency by percentile, µs", ("sans-serif", 22))
        .margin(14)
        .margin_right(40)
        .x_label_area_size(34)
        .y_label_area_size(70)
        .build_cartesian_2d(0..n - 1, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(n)
        .x_label_formatter(&|i: &usize| {
            PERCENTILES
                .get(*i)
                .map_or(String::new(), |&p| percentile_label(p))
        })
        .x_desc("percentile")
        .y_label_formatter(&|v: &f64| format!("{v:.0}"))
        .y_desc("µs (log scale)")
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 15))
        .draw()?;
    for (s, v) in pct {
        let color = series_color(*s);
        let points: Vec<(usize, f64)> = v.iter().copied().enumerate().collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(3)))?
            .label(s.label())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()?;
    root.present()?;
    Ok(())
}

fn register_font() -> Result<(), Box<dyn Error>> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("RMI_COMPARE_FONT")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    for p in [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/Library/Fonts/Arial.ttf",
    ] {
        candidates.push(p.into());
    }
    for p in candidates {
        if let Ok(bytes) = std::fs::read(&p) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return Ok(());
            }
        }
    }
    Err("no TrueType font found (set RMI_COMPARE_FONT to a .ttf file)".into())
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    f: Figure,
    bars: &[(String, Stat, bool)],
) -> Result<(), Box<dyn Error>>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let n = bars.len();
    let top = bars
        .iter()
        .map(|b| b.1.max.max(b.1.median))
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.15;
    let title = f.title().replace('`', "");
    let mut chart = ChartBuilder::on(&root)
        .caption(&title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(34)
        .y_label_area_size(80)
        .build_cartesian_2d((0..n.max(2) - 1).into_segmented(), 0f64..top)?;
    let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    let xfmt = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) if *i < labels.len() => labels[*i].clone(),
        _ => String::new(),
    };
    let yfmt = |v: &f64| {
        if top >= 10_000.0 {
            format!("{}k", thousands(*v / 1e3))
        } else if top >= 10.0 {
            thousands(*v)
        } else {
            format!("{v:.2}")
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&xfmt)
        .y_labels(8)
        .y_label_formatter(&yfmt)
        .y_desc(f.unit())
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 15))
        .draw()?;
    let rmi_color = RGBColor(0xE6, 0x6A, 0x1F);
    let other_color = RGBColor(0x4C, 0x72, 0xB0);
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, st, rmi))| {
        let color = if *rmi { rmi_color } else { other_color };
        let mut r = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), st.median),
            ],
            color.filled(),
        );
        r.set_margin(0, 0, 14, 14);
        r
    }))?;
    chart.draw_series(
        bars.iter()
            .enumerate()
            .filter(|(_, b)| b.1.max > b.1.min)
            .map(|(i, (_, st, _))| {
                ErrorBar::new_vertical(
                    SegmentValue::CenterOf(i),
                    st.min,
                    st.median,
                    st.max,
                    BLACK.stroke_width(1),
                    12,
                )
            }),
    )?;
    let text =
        TextStyle::from(("sans-serif", 15).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, st, _))| {
        Text::new(
            f.fmt(st.median),
            (
                SegmentValue::CenterOf(i),
                st.max.max(st.median) + top * 0.01,
            ),
            text.clone(),
        )
    }))?;
    root.present()?;
    Ok(())
}
