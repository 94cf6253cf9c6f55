//! The status page in a real headless Chromium, on the simulated house: at a phone's width and
//! a desktop's, every sensor's power is in view without scrolling sideways, every card draws
//! its sparkline, values update without a reload, and the console stays clean. Screenshots go
//! to the test artefacts (`target/tmp/page/`).

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::path::PathBuf;
use std::time::Duration;

use browser::Browser;
use common::Daemon;

fn simulated_config() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/simulated.toml"
    ))
    .expect("config/simulated.toml")
}

fn artefact(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("page")
        .join(name)
}

#[test]
fn the_page_fits_a_phone_and_a_desktop_and_updates_itself() {
    let d = Daemon::start(&simulated_config());
    // A few samples for the sparklines.
    std::thread::sleep(Duration::from_secs(3));
    let url = format!("http://{}/", d.addr);
    let browser = Browser::start();
    let mut page = browser.page();
    for (name, width, height, scheme) in [
        ("phone", 390, 844, "light"),
        ("desktop", 1280, 900, "light"),
        ("phone-dark", 390, 844, "dark"),
    ] {
        page.viewport(width, height);
        page.call(
            "Emulation.setEmulatedMedia",
            serde_json::json!({ "features": [{ "name": "prefers-color-scheme", "value": scheme }] }),
        );
        page.navigate(&url);
        page.wait_for(
            "document.querySelectorAll('.card[data-sensor]').length === 5",
            Duration::from_secs(10),
        );
        // Nothing sticks out sideways.
        let widths = page.eval("[document.documentElement.scrollWidth, window.innerWidth]");
        assert_eq!(
            widths[0], widths[1],
            "{name}: page wider than the viewport: {widths}"
        );
        // Every power value lies within the viewport's width.
        let outside = page.eval(
            "Array.from(document.querySelectorAll('[data-f=power]')).filter((e) => { \
               const r = e.getBoundingClientRect(); \
               return r.width === 0 || r.left < 0 || r.right > window.innerWidth; \
             }).map((e) => e.closest('.card').dataset.sensor)",
        );
        assert_eq!(
            outside,
            serde_json::json!([]),
            "{name}: power values out of view"
        );
        // Each sensor card draws a sparkline with points (after the first update at the
        // latest).
        page.wait_for(
            "Array.from(document.querySelectorAll('.card[data-sensor] svg')).every((s) => \
               Number(s.dataset.points) > 0 && (s.querySelector('path').getAttribute('d') || '').startsWith('M'))",
            Duration::from_secs(10),
        );
        page.screenshot(&artefact(&format!("{name}.png")));
        let background = page.eval("getComputedStyle(document.body).backgroundColor");
        let dark = background == serde_json::json!("rgb(20, 22, 26)");
        assert_eq!(dark, scheme == "dark", "{name}: background {background}");
    }
    // An update changes what is shown, without reloading the page.
    page.eval("window.stillTheSamePage = true");
    let before = page.eval(
        "Array.from(document.querySelectorAll('[data-f=power], [data-f=live]')).map((e) => e.textContent).join('|')",
    );
    page.wait_for(
        &format!(
            "Array.from(document.querySelectorAll('[data-f=power], [data-f=live]')).map((e) => e.textContent).join('|') !== {before}"
        ),
        Duration::from_secs(15),
    );
    assert_eq!(
        page.eval("window.stillTheSamePage === true"),
        serde_json::json!(true)
    );
    // Hovering a sparkline names a value and a time.
    let tip = page.eval(
        "(() => { const svg = document.querySelector('.card[data-sensor] svg'); \
           const r = svg.getBoundingClientRect(); \
           svg.dispatchEvent(new PointerEvent('pointermove', { clientX: r.right - 2, clientY: r.top + 5, bubbles: true })); \
           return svg.closest('.card').querySelector('[data-f=tip]').textContent; })()",
    );
    let tip = tip.as_str().unwrap();
    assert!(
        tip.contains(" W at ") || tip.contains("beyond range at "),
        "{tip}"
    );
    assert_eq!(page.errors(), Vec::<String>::new(), "console errors");
}

#[test]
fn the_first_paint_needs_no_javascript() {
    let d = Daemon::start(&simulated_config());
    std::thread::sleep(Duration::from_secs(3));
    let page = d.get("/");
    assert_eq!(page.status, 200);
    let html = page.text();
    for sensor in ["ac001", "wm002", "fr003", "pi_5v", "battery"] {
        let card = &html[html
            .find(&format!("data-sensor=\"{sensor}\""))
            .expect(sensor)..];
        let power = &card[card.find("data-f=\"power\">").unwrap() + 15..];
        let value = &power[..power.find('<').unwrap()];
        assert!(value.parse::<f64>().is_ok(), "{sensor}: power {value:?}");
        let path = &card[card.find("<path d=\"").unwrap() + 9..];
        assert!(path.starts_with('M'), "{sensor}: no sparkline");
    }
    assert!(html.contains("data-battery=\"house\""));
    // The policy the page runs under: its own files only, no inline code.
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!html.contains(" onclick") && !html.contains("<script>"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    for (path, kind) in [
        ("/static/app.js", "text/javascript"),
        ("/static/style.css", "text/css"),
    ] {
        let r = d.get(path);
        assert_eq!(r.status, 200);
        assert!(r.header("content-type").unwrap().starts_with(kind));
    }
}

#[test]
fn history_answers_per_sensor_and_refuses_what_it_does_not_know() {
    let d = Daemon::start(&simulated_config());
    std::thread::sleep(Duration::from_secs(3));
    let all: serde_json::Value = serde_json::from_slice(&d.get("/api/history").body).unwrap();
    assert_eq!(all["sensors"].as_object().unwrap().len(), 5);
    let one: serde_json::Value =
        serde_json::from_slice(&d.get("/api/history?sensor=fr003").body).unwrap();
    let points = one["sensors"]["fr003"]["points"].as_array().unwrap();
    assert!(!points.is_empty());
    let newest = points.last().unwrap()[0].as_f64().unwrap();
    let later: serde_json::Value = serde_json::from_slice(
        &d.get(&format!("/api/history?sensor=fr003&since={newest}"))
            .body,
    )
    .unwrap();
    assert!(later["sensors"]["fr003"]["points"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p[0].as_f64().unwrap() > newest));
    assert_eq!(d.get("/api/history?sensor=nope").status, 404);
    assert_eq!(d.get("/api/history?since=yesterday").status, 400);
    assert_eq!(d.get("/api/history?limit=5").status, 400);
}
