//! `--plot FILE.svg`: throughput and latency against concurrency, twopc
//! and the peer side by side, written as plain SVG (no dependencies).
//! Left: commits/s (linear). Right: p50 (solid) and p99 (dashed) latency
//! in ms (log scale), with the floor as a dotted line. Concurrency is on
//! a log2 axis.

use super::report::{Report, SystemRun};
use std::fmt::Write as _;

const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 440.0;
const PANEL_W: f64 = 400.0;
const PANEL_H: f64 = 300.0;
const TOP: f64 = 70.0;
const LEFT: [f64; 2] = [90.0, 580.0];
const COLORS: [&str; 3] = ["#1f6fd1", "#e8731a", "#2a9d55"];

/// A step of 1, 2 or 5 × 10^k giving about `n` ticks over `range`.
fn nice_step(range: f64, n: f64) -> f64 {
    let raw = (range / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let step = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    step * mag
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn fmt_num(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 1.0 || v == 0.0 {
        format!("{}", (v * 100.0).round() / 100.0)
    } else {
        format!("{v:.2}")
    }
}

struct Axes {
    x0: f64,
    cmin: f64,
    cmax: f64,
}

impl Axes {
    fn x(&self, c: f64) -> f64 {
        let (a, b) = (self.cmin.log2(), self.cmax.log2());
        let t = if b > a { (c.log2() - a) / (b - a) } else { 0.5 };
        self.x0 + 10.0 + t * (PANEL_W - 20.0)
    }
}

pub fn svg(report: &Report) -> String {
    let mut systems: Vec<&SystemRun> = vec![&report.twopc];
    if let Some(p) = &report.peer {
        systems.push(p);
    }
    let conc: Vec<f64> = report.settings.concurrency.iter().map(|c| *c as f64).collect();
    let cmin = conc.iter().copied().fold(f64::INFINITY, f64::min).max(1.0);
    let cmax = conc.iter().copied().fold(0.0, f64::max).max(cmin);
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let s = &report.settings;
    let title = format!(
        "twopc bench: {} workload, {}, {}, {} s per level",
        s.workload,
        super::report::participants(s.participants),
        s.keys_description(),
        s.duration_s
    );
    let _ = writeln!(
        o,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        WIDTH / 2.0,
        esc(&title)
    );
    let _ = writeln!(
        o,
        r##"<text x="{}" y="42" text-anchor="middle" fill="#555">{}</text>"##,
        WIDTH / 2.0,
        esc(&report.machine.one_line())
    );

    // Left panel: throughput.
    let ax = Axes { x0: LEFT[0], cmin, cmax };
    let tmax = systems.iter().flat_map(|s| s.levels.iter().map(|l| l.throughput)).fold(0.0, f64::max).max(1.0);
    let step = nice_step(tmax * 1.1, 5.0);
    let top = (tmax * 1.1 / step).ceil() * step;
    let y_t = |v: f64| TOP + PANEL_H - v / top * PANEL_H;
    frame(&mut o, &ax, &conc, "commits/s", "throughput");
    let mut v = 0.0;
    while v <= top + step * 0.01 {
        grid_line(&mut o, LEFT[0], y_t(v), &fmt_num(v));
        v += step;
    }
    for (i, sys) in systems.iter().enumerate() {
        let pts: Vec<(f64, f64)> = sys.levels.iter().map(|l| (ax.x(l.concurrency as f64), y_t(l.throughput))).collect();
        series(&mut o, &pts, COLORS[i % COLORS.len()], "");
    }

    // Right panel: latency (log scale).
    let ax = Axes { x0: LEFT[1], cmin, cmax };
    let lats: Vec<f64> = systems
        .iter()
        .flat_map(|s| s.levels.iter().filter(|l| l.commits > 0).flat_map(|l| [l.p50_us, l.p99_us]))
        .chain([report.floor.floor_us])
        .filter(|v| *v > 0.0)
        .map(|us| us / 1000.0)
        .collect();
    let lo = lats.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = lats.iter().copied().fold(0.0, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > 0.0 { (lo, hi) } else { (0.1, 10.0) };
    let dlo = lo.log10().floor();
    let dhi = hi.log10().ceil().max(dlo + 1.0);
    let y_l = |ms: f64| TOP + PANEL_H - (ms.max(1e-9).log10() - dlo) / (dhi - dlo) * PANEL_H;
    frame(&mut o, &ax, &conc, "latency, ms (log)", "latency: p50 solid, p99 dashed; floor dotted");
    let mut d = dlo;
    while d <= dhi + 1e-9 {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powf(d);
            if v.log10() <= dhi + 1e-9 {
                grid_line(&mut o, LEFT[1], y_l(v), &fmt_num(v));
            }
        }
        d += 1.0;
    }
    for (i, sys) in systems.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let live: Vec<_> = sys.levels.iter().filter(|l| l.commits > 0).collect();
        let p50: Vec<(f64, f64)> = live.iter().map(|l| (ax.x(l.concurrency as f64), y_l(l.p50_us / 1000.0))).collect();
        let p99: Vec<(f64, f64)> = live.iter().map(|l| (ax.x(l.concurrency as f64), y_l(l.p99_us / 1000.0))).collect();
        series(&mut o, &p50, color, "");
        series(&mut o, &p99, color, r#" stroke-dasharray="6 4""#);
    }
    if report.floor.floor_us > 0.0 {
        let y = y_l(report.floor.floor_us / 1000.0);
        let _ = writeln!(
            o,
            r##"<line x1="{}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#444" stroke-dasharray="2 3"/><text x="{}" y="{:.1}" text-anchor="end" fill="#444" font-size="11">floor {:.2} ms</text>"##,
            LEFT[1],
            LEFT[1] + PANEL_W,
            LEFT[1] + PANEL_W - 4.0,
            y - 4.0,
            report.floor.floor_us / 1000.0
        );
    }

    // Legend.
    let mut x = WIDTH / 2.0 - 90.0 * systems.len() as f64;
    for (i, sys) in systems.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let _ = writeln!(
            o,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            x + 24.0,
            x + 30.0,
            HEIGHT - 16.0 + 4.0,
            esc(&sys.system),
            y = HEIGHT - 16.0
        );
        x += 180.0;
    }
    let _ = writeln!(o, "</svg>");
    o
}

fn frame(o: &mut String, ax: &Axes, conc: &[f64], ylabel: &str, title: &str) {
    let x0 = ax.x0;
    let _ =
        writeln!(o, r##"<rect x="{x0}" y="{TOP}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#333"/>"##);
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}" text-anchor="middle" font-weight="bold">{}</text>"#,
        x0 + PANEL_W / 2.0,
        TOP - 10.0,
        esc(title)
    );
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}" text-anchor="middle" transform="rotate(-90 {} {})">{}</text>"#,
        x0 - 55.0,
        TOP + PANEL_H / 2.0,
        x0 - 55.0,
        TOP + PANEL_H / 2.0,
        esc(ylabel)
    );
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}" text-anchor="middle">concurrency (clients)</text>"#,
        x0 + PANEL_W / 2.0,
        TOP + PANEL_H + 36.0
    );
    for c in conc {
        let x = ax.x(*c);
        let _ = writeln!(
            o,
            r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#333"/><text x="{x:.1}" y="{}" text-anchor="middle">{c}</text>"##,
            TOP + PANEL_H,
            TOP + PANEL_H + 5.0,
            TOP + PANEL_H + 18.0
        );
    }
}

fn grid_line(o: &mut String, x0: f64, y: f64, label: &str) {
    if !(TOP - 0.5..=TOP + PANEL_H + 0.5).contains(&y) {
        return;
    }
    let _ = writeln!(
        o,
        r##"<line x1="{x0}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
        x0 + PANEL_W,
        x0 - 6.0,
        y + 4.0,
        esc(label)
    );
}

fn series(o: &mut String, pts: &[(f64, f64)], color: &str, extra: &str) {
    if pts.is_empty() {
        return;
    }
    let path: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let _ = writeln!(
        o,
        r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2.5"{extra}/>"#,
        path.join(" ")
    );
    for (x, y) in pts {
        let _ = writeln!(o, r#"<circle cx="{x:.1}" cy="{y:.1}" r="3.5" fill="{color}"/>"#);
    }
}

#[cfg(test)]
mod tests {
    use super::super::report::tests::fixed_report;
    use super::*;

    #[test]
    fn svg_is_well_formed_and_has_both_systems() {
        let r = fixed_report();
        let svg = svg(&r);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // Two series per system on the latency panel, one on throughput.
        assert_eq!(svg.matches("<polyline").count(), 6);
        assert_eq!(svg.matches("<circle").count(), 30);
        assert!(svg.contains(">twopc<") && svg.contains(">postgres<") && svg.contains("floor 2.10 ms"));
        // Tags balance: every element is self-closed or closed.
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn a_run_without_peer_or_commits_still_plots() {
        let mut r = fixed_report();
        r.peer = None;
        for l in &mut r.twopc.levels {
            l.commits = 0;
            l.throughput = 0.0;
        }
        let svg = svg(&r);
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        assert!(svg.contains(">twopc<") && !svg.contains(">postgres<"));
    }

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(100.0, 5.0), 20.0);
        assert_eq!(nice_step(30_000.0, 5.0), 10_000.0);
        assert_eq!(nice_step(7.0, 5.0), 2.0);
    }
}
