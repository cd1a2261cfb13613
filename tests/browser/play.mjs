// node play.mjs URL SCREENSHOT.png
// Loads h4fs serve's page in Debian's chromium (headless), plays the first video,
// seeks it, checks that time moves and a frame has been drawn, saves a screenshot, and
// prints one JSON line with what it saw. Exits non-zero on any failure.
import { chromium } from "playwright-core";

const [url, shot] = process.argv.slice(2);
if (!url || !shot) {
  console.error("usage: node play.mjs URL SCREENSHOT.png");
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--autoplay-policy=no-user-gesture-required",
  ],
});
let code = 0;
try {
  const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
  const errors = [];
  page.on("pageerror", e => errors.push(String(e)));
  await page.goto(url, { waitUntil: "load", timeout: 30000 });
  await page.waitForSelector("body[data-ready='1']", { timeout: 30000 });
  const sections = await page.$$eval("section.container", s => s.map(x => x.dataset.name));
  const kf = await page.$$eval(".timeline .kf", k => k.length);
  await page.waitForFunction(() => {
    const t = document.querySelector(".integrity");
    return t && t.textContent !== "…";
  }, null, { timeout: 30000 });
  const integrity = await page.$eval(".integrity", e => e.textContent);
  const result = await page.evaluate(async () => {
    const v = document.querySelector("video");
    const wait = (ev, ms) => new Promise((ok, fail) => {
      const t = setTimeout(() => fail(new Error("timeout waiting for " + ev)), ms);
      v.addEventListener(ev, () => { clearTimeout(t); ok(); }, { once: true });
    });
    if (v.readyState < 1) await wait("loadedmetadata", 20000);
    v.muted = true;
    await v.play();
    const start = v.currentTime;
    await new Promise(ok => setTimeout(ok, 1500));
    const played = v.currentTime;
    // Seek through the keyframe timeline: click at 60 % of its width.
    const line = document.querySelector(".timeline");
    const r = line.getBoundingClientRect();
    const seeked = wait("seeked", 20000);
    line.dispatchEvent(new MouseEvent("click", { clientX: r.left + 0.6 * r.width, clientY: r.top + 5, bubbles: true }));
    await seeked;
    const afterSeek = v.currentTime;
    await new Promise(ok => setTimeout(ok, 1000));
    const later = v.currentTime;
    // A frame has been rendered: draw it and look for non-black pixels.
    const c = document.createElement("canvas");
    c.width = v.videoWidth; c.height = v.videoHeight;
    const g = c.getContext("2d");
    g.drawImage(v, 0, 0);
    const px = g.getImageData(0, 0, c.width, c.height).data;
    let lit = 0;
    for (let i = 0; i < px.length; i += 4 * 97) if (px[i] + px[i + 1] + px[i + 2] > 60) lit++;
    return { duration: v.duration, start, played, afterSeek, later, width: v.videoWidth, height: v.videoHeight, lit, error: v.error && v.error.message };
  });
  await page.screenshot({ path: shot, fullPage: true });
  console.log(JSON.stringify({ sections, keyframes: kf, integrity, errors, ...result }));
} catch (e) {
  console.error("browser test failed: " + (e && e.stack || e));
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
