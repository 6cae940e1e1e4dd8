//! The report: one self-contained HTML file (the plots are SVG drawn by `plotters`, embedded
//! inline) and the same facts as JSON, plus the invariant table for the terminal.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;
use serde::Serialize;

use crate::checker::{Recovery, Verdict};
use crate::history::{History, Kind, Outcome};
use crate::schedule::PlannedFault;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report<'a> {
    pub tool: &'static str,
    pub target: String,
    pub seed: u64,
    pub duration_s: f64,
    pub rate: f64,
    pub passed: bool,
    pub invariants: &'a [Verdict],
    pub recovery: &'a [Recovery],
    /// Per fault, ms from injection to the first acknowledged signing sent after it.
    pub recovery_per_fault: &'a [Option<u64>],
    pub schedule: &'a [PlannedFault],
    pub history: &'a History,
}

/// Writes `report.json` and `report.html` under `dir`; returns their paths.
pub fn write(dir: &Path, report: &Report<'_>) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = dir.join("report.json");
    std::fs::write(&json, serde_json::to_vec_pretty(report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let html = dir.join("report.html");
    std::fs::write(&html, render_html(report)?)
        .with_context(|| format!("writing {}", html.display()))?;
    Ok((json, html))
}

/// The invariant table as text.
pub fn invariant_table(verdicts: &[Verdict]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<34} {:<6} {:>8} {:>10}",
        "invariant", "", "checked", "violations"
    );
    for v in verdicts {
        let _ = writeln!(
            out,
            "{:<34} {:<6} {:>8} {:>10}",
            v.name,
            if v.holds { "PASS" } else { "FAIL" },
            v.checked,
            v.violations
        );
        for e in v.examples.iter().take(5) {
            let _ = writeln!(out, "    {e}");
        }
    }
    out
}

/// The recovery table as text.
pub fn recovery_table(recovery: &[Recovery]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:>6} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "fault", "faults", "recovered", "p50 ms", "p99 ms", "max ms", "availability"
    );
    let ms = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    for r in recovery {
        let _ = writeln!(
            out,
            "{:<16} {:>6} {:>9} {:>9} {:>9} {:>9} {:>11.1}%",
            r.kind,
            r.faults,
            r.recovered,
            ms(r.p50_ms),
            ms(r.p99_ms),
            ms(r.max_ms),
            r.availability * 100.0
        );
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn colour(outcome: Outcome) -> RGBColor {
    match outcome {
        Outcome::Ok => RGBColor(46, 139, 87),
        Outcome::Throttled => RGBColor(70, 130, 180),
        Outcome::Unavailable => RGBColor(255, 165, 0),
        Outcome::Refused => RGBColor(148, 0, 211),
        Outcome::ServerError => RGBColor(220, 20, 60),
        Outcome::Transport => RGBColor(120, 120, 120),
        Outcome::Timeout => RGBColor(0, 0, 0),
    }
}

const OUTCOMES: [Outcome; 7] = [
    Outcome::Ok,
    Outcome::Throttled,
    Outcome::Unavailable,
    Outcome::Refused,
    Outcome::ServerError,
    Outcome::Transport,
    Outcome::Timeout,
];

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotting: {e:?}")
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// Latency of every signing attempt over time, coloured by outcome, faults shaded.
pub fn latency_svg(h: &History) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1100, 440)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let x_max = secs(h.end_ms).max(1.0);
        let y_max = h
            .attempts
            .iter()
            .filter(|a| a.kind == Kind::Sign)
            .map(|a| secs(a.took_ms()))
            .fold(0.5f64, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Latency of every signing attempt (faults shaded)",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("seconds into the drill")
            .y_desc("latency (s)")
            .draw()
            .map_err(plot_err)?;
        shade_faults(&mut chart, h, y_max)?;
        for outcome in OUTCOMES {
            let c = colour(outcome);
            let points: Vec<(f64, f64)> = h
                .attempts
                .iter()
                .filter(|a| a.kind == Kind::Sign && a.outcome == outcome)
                .map(|a| (secs(a.start_ms), secs(a.took_ms())))
                .collect();
            if points.is_empty() {
                continue;
            }
            chart
                .draw_series(points.into_iter().map(|p| Circle::new(p, 2, c.filled())))
                .map_err(plot_err)?
                .label(outcome.name())
                .legend(move |(x, y)| Circle::new((x + 8, y), 4, c.filled()));
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.85))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

fn shade_faults<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    h: &History,
    y_max: f64,
) -> Result<()> {
    let shade = RGBColor(255, 99, 71).mix(0.15);
    chart
        .draw_series(h.faults.iter().map(|f| {
            Rectangle::new(
                [(secs(f.start_ms), 0.0), (secs(f.heal_ms), y_max)],
                shade.filled(),
            )
        }))
        .map_err(|e| anyhow!("plotting: {e:?}"))?;
    chart
        .draw_series(h.faults.iter().map(|f| {
            Text::new(
                f.kind.name().to_owned(),
                (secs(f.start_ms), y_max * 0.97),
                ("sans-serif", 11).into_font(),
            )
        }))
        .map_err(|e| anyhow!("plotting: {e:?}"))?;
    Ok(())
}

/// Acknowledged signings and failed signing attempts per second, and the error rate.
pub fn throughput_svg(h: &History) -> Result<String> {
    let seconds = usize::try_from(h.end_ms / 1000 + 1).unwrap_or(1);
    let mut ok = vec![0u32; seconds];
    let mut bad = vec![0u32; seconds];
    for a in h.attempts.iter().filter(|a| a.kind == Kind::Sign) {
        let s = usize::try_from(a.end_ms / 1000)
            .unwrap_or(0)
            .min(seconds - 1);
        if a.outcome == Outcome::Ok {
            ok[s] += 1;
        } else {
            bad[s] += 1;
        }
    }
    let y_max = ok.iter().chain(&bad).copied().max().unwrap_or(1).max(1) as f64 * 1.15;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1100, 380)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Throughput and errors per second (faults shaded)",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .right_y_label_area_size(60)
            .build_cartesian_2d(0f64..seconds as f64, 0f64..y_max)
            .map_err(plot_err)?
            .set_secondary_coord(0f64..seconds as f64, 0f64..100f64);
        chart
            .configure_mesh()
            .x_desc("seconds into the drill")
            .y_desc("attempts per second")
            .draw()
            .map_err(plot_err)?;
        chart
            .configure_secondary_axes()
            .y_desc("error rate (%)")
            .draw()
            .map_err(plot_err)?;
        shade_faults(&mut chart, h, y_max)?;
        let green = colour(Outcome::Ok);
        let orange = colour(Outcome::Unavailable);
        chart
            .draw_series(LineSeries::new(
                ok.iter()
                    .enumerate()
                    .map(|(s, n)| (s as f64, f64::from(*n))),
                green.stroke_width(2),
            ))
            .map_err(plot_err)?
            .label("acknowledged signings/s")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], green.stroke_width(2)));
        chart
            .draw_series(LineSeries::new(
                bad.iter()
                    .enumerate()
                    .map(|(s, n)| (s as f64, f64::from(*n))),
                orange.stroke_width(2),
            ))
            .map_err(plot_err)?
            .label("other answers/s (429, 503, no answer)")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], orange.stroke_width(2)));
        let red = colour(Outcome::ServerError);
        chart
            .draw_secondary_series(LineSeries::new(
                ok.iter().zip(&bad).enumerate().map(|(s, (o, b))| {
                    let all = o + b;
                    let rate = if all == 0 {
                        0.0
                    } else {
                        f64::from(*b) * 100.0 / f64::from(all)
                    };
                    (s as f64, rate)
                }),
                red.mix(0.6).stroke_width(1),
            ))
            .map_err(plot_err)?
            .label("error rate (%)")
            .legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 16, y)], red.mix(0.6).stroke_width(1))
            });
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.85))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// Recovery time of each fault, by fault (x) and kind (label).
pub fn recovery_svg(h: &History, per_fault: &[Option<u64>]) -> Result<String> {
    let y_max = per_fault
        .iter()
        .flatten()
        .map(|m| secs(*m))
        .fold(1.0f64, f64::max)
        * 1.2;
    let n = h.faults.len().max(1) as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1100, 340)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Recovery per fault: injected → first acknowledged signing",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5f64..n - 0.5, 0f64..y_max)
            .map_err(plot_err)?;
        let whole = |x: &f64| {
            if x.fract().abs() < 1e-9 && *x >= 0.0 {
                format!("{x:.0}")
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .x_labels(h.faults.len() + 1)
            .x_label_formatter(&whole)
            .x_desc("fault number")
            .y_desc("recovery (s)")
            .draw()
            .map_err(plot_err)?;
        let bar = RGBColor(70, 130, 180);
        chart
            .draw_series(h.faults.iter().zip(per_fault).filter_map(|(f, r)| {
                r.map(|ms| {
                    Rectangle::new(
                        [
                            (f.index as f64 - 0.35, 0.0),
                            (f.index as f64 + 0.35, secs(ms)),
                        ],
                        bar.filled(),
                    )
                })
            }))
            .map_err(plot_err)?;
        chart
            .draw_series(h.faults.iter().zip(per_fault).map(|(f, r)| {
                Text::new(
                    f.kind.name().to_owned(),
                    (
                        f.index as f64 - 0.35,
                        r.map(secs).unwrap_or(0.0) + y_max * 0.03,
                    ),
                    ("sans-serif", 10).into_font(),
                )
            }))
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

fn render_html(r: &Report<'_>) -> Result<String> {
    let mut h = String::new();
    let verdict = if r.passed {
        "every invariant held"
    } else {
        "INVARIANTS VIOLATED"
    };
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>stella-chaos drill, seed {seed}</title>\
         <style>body{{font-family:sans-serif;margin:2em;max-width:1150px}}table{{border-collapse:collapse;margin:1em 0}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}}.pass{{color:#2e8b57;font-weight:bold}}\
         .fail{{color:#dc143c;font-weight:bold}}code,pre{{font-size:90%}}details{{margin:.3em 0}}</style></head><body>\
         <h1>Chaos drill: <span class=\"{cls}\">{verdict}</span></h1>\
         <p>Target <code>{target}</code>, seed <code>{seed}</code>, {dur} s at {rate} signings/s. \
         Reproduce the schedule: <code>stella-chaos drill --seed {seed} --duration {dur} …</code></p>",
        seed = r.seed,
        cls = if r.passed { "pass" } else { "fail" },
        target = esc(&r.target),
        dur = r.duration_s,
        rate = r.rate,
    );
    let signs: Vec<_> = r
        .history
        .attempts
        .iter()
        .filter(|a| a.kind == Kind::Sign)
        .collect();
    let ok = signs.iter().filter(|a| a.outcome == Outcome::Ok).count();
    let _ = write!(
        h,
        "<p>{} signing attempts ({} acknowledged), {} audit reads, {} replays, {} faults.</p>",
        signs.len(),
        ok,
        r.history
            .attempts
            .iter()
            .filter(|a| matches!(a.kind, Kind::ReadLinearizable | Kind::ReadStale))
            .count(),
        r.history
            .attempts
            .iter()
            .filter(|a| a.kind == Kind::Replay)
            .count(),
        r.history.faults.len()
    );
    h.push_str("<h2>Invariants</h2><table><tr><th>invariant</th><th>result</th><th>checked</th><th>violations</th><th>what it means / offending requests and records</th></tr>");
    for v in r.invariants {
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}",
            v.name,
            if v.holds { "pass" } else { "fail" },
            if v.holds { "PASS" } else { "FAIL" },
            v.checked,
            v.violations,
            esc(v.description)
        );
        if !v.examples.is_empty() {
            h.push_str("<details open><summary>offenders</summary><pre>");
            for e in &v.examples {
                let _ = writeln!(h, "{}", esc(e));
            }
            h.push_str("</pre></details>");
        }
        h.push_str("</td></tr>");
    }
    h.push_str("</table>");
    h.push_str("<h2>Latency over time</h2>");
    h.push_str(&latency_svg(r.history)?);
    h.push_str("<h2>Throughput and error rate</h2>");
    h.push_str(&throughput_svg(r.history)?);
    h.push_str("<h2>Recovery</h2>");
    h.push_str(&recovery_svg(r.history, r.recovery_per_fault)?);
    h.push_str("<table><tr><th>fault kind</th><th>faults</th><th>recovered</th><th>p50</th><th>p99</th><th>max</th><th>availability during the fault</th></tr>");
    let ms = |v: Option<u64>| v.map(|v| format!("{v} ms")).unwrap_or_else(|| "-".into());
    for rec in r.recovery {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1} %</td></tr>",
            rec.kind,
            rec.faults,
            rec.recovered,
            ms(rec.p50_ms),
            ms(rec.p99_ms),
            ms(rec.max_ms),
            rec.availability * 100.0
        );
    }
    h.push_str("</table><h2>Schedule (as planned from the seed, and as it ran)</h2><table><tr><th>#</th><th>fault</th><th>planned at</th><th>hold</th><th>injected</th><th>healed</th><th>ready again</th><th>leader then</th><th>nodes</th><th>links / clock / membership</th><th>recovery</th><th>nemesis errors</th></tr>");
    for (f, rec) in r.history.faults.iter().zip(r.recovery_per_fault) {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{} s</td><td>{} s</td><td>{:.1} s</td><td>{:.1} s</td><td>{}</td><td>{}</td><td>{:?}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            f.index,
            f.kind.name(),
            f.planned_at_s,
            f.hold_s,
            secs(f.start_ms),
            secs(f.heal_ms),
            f.settled_ms
                .map(|m| format!("{:.1} s", secs(m)))
                .unwrap_or_else(|| "never".into()),
            f.leader
                .map(|l| l.to_string())
                .unwrap_or_else(|| "none".into()),
            f.nodes,
            match f.skew_seconds {
                Some(s) => format!(
                    "clock {s:+} s (its Date header: {})",
                    f.observed_skew_seconds
                        .map(|o| format!("{o:+} s"))
                        .unwrap_or_else(|| "no answer".into())
                ),
                None => detail(f),
            },
            ms(*rec),
            esc(&f.errors.join("; "))
        );
    }
    h.push_str("</table>");
    let unrun = r.schedule.len().saturating_sub(r.history.faults.len());
    if unrun > 0 {
        let _ = write!(
            h,
            "<p>{unrun} planned fault(s) did not fit in the drill's time (the cluster took longer to settle than planned).</p>"
        );
    }
    h.push_str("<p>The full history (every attempt: start, end, node, status, problem code, Retry-After, audit id, bundle hash, DPoP proof id) is in <code>report.json</code> beside this file.</p></body></html>");
    Ok(h)
}

/// The fault's particulars for the schedule table: links cut, delay added, node joined, notes.
fn detail(f: &crate::history::FaultEvent) -> String {
    let mut parts = Vec::new();
    if !f.cuts.is_empty() {
        parts.push(format!("cut {:?}", f.cuts));
    }
    if let Some(d) = f.link_delay_ms {
        parts.push(format!("+{d} ms each way"));
    }
    if let Some(j) = f.joined {
        parts.push(format!("fresh node {j} joined"));
    }
    if let Some(p) = f.purged_past_follower {
        parts.push(format!("log compacted past the follower: {p}"));
    }
    parts.extend(f.notes.iter().cloned());
    esc(&parts.join("; "))
}
