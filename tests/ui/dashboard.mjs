// Drives Debian's Chromium (headless, through Playwright's CDP client)
// against a running proxy's dashboard. tests/e2e/dashboard.rs starts the
// proxy, its upstreams and the traffic, then runs this with:
//   ADMIN  http://127.0.0.1:PORT     TOKEN  a write token   READ_TOKEN  a read-only one
//   OPEN_ADMIN  another proxy's admin API, without tokens
//   SHOTS  where the screenshots go
// Every check throws on failure; the exit code says whether all held.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";

const { ADMIN, OPEN_ADMIN, TOKEN, READ_TOKEN, SHOTS } = process.env;
const LIMIT = 20_000; // ms for anything the page should show
mkdirSync(SHOTS, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});

/** A page that records every console error and uncaught exception. */
async function open(url, viewport = { width: 1280, height: 900 }) {
  const page = await browser.newPage({ viewport });
  page.problems = [];
  page.on("console", (m) => { if (m.type() === "error" || m.type() === "warning") page.problems.push(`console ${m.type()}: ${m.text()}`); });
  page.on("pageerror", (e) => page.problems.push(`uncaught: ${e.message}`));
  await page.goto(url);
  return page;
}

async function api(method, path, body, token = TOKEN) {
  const r = await fetch(ADMIN + path, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  assert.ok(r.ok, `${method} ${path}: ${r.status} ${text}`);
  return JSON.parse(text);
}

const cell = (page, pool, cls) => page.locator(`#service-web tr[data-pool="${pool}"] td.${cls}`);
const button = (page, action) => page.locator(`#service-web button[data-action="${action}"]`);
const step = async (name, f) => {
  try { await f(); console.log(`ok: ${name}`); } catch (e) { console.log(`FAILED: ${name}`); throw e; }
};

try {
  // 1. Without a token (reads are open on loopback): everything shows, nothing can be changed.
  const page = await open(`${ADMIN}/ui`);
  await step("the page lists the service and its pools with versions", async () => {
    await page.locator("#service-web tr[data-pool=canary]").waitFor({ timeout: LIMIT });
    assert.equal(await cell(page, "canary", "version").textContent(), "v2");
    assert.equal(await cell(page, "stable", "version").textContent(), "v1");
  });
  await step("the charts plot the pools' live request rates, as the table shows them", async () => {
    await page.waitForFunction(() => {
      const s = window.dashboard.services.get("web");
      const rate = s && s.series.pools.stable && s.series.pools.stable.rate;
      return rate && rate.length >= 3 && rate[rate.length - 1] > 10;
    }, null, { timeout: LIMIT });
    // Read in one go, between two polls.
    const plotted = await page.evaluate(() => {
      const u = window.dashboard.services.get("web").charts.rate.u;
      const shown = document.querySelector('#service-web tr[data-pool="stable"] td.rate').textContent;
      const rows = [...document.querySelectorAll("#service-web tr[data-pool]")].map((r) => r.dataset.pool);
      const stable = rows.indexOf("stable") + 1;
      return { rows, series: u.series.slice(1).map((x) => x.label), points: u.data[stable].length, last: u.data[stable].at(-1), shown: Number(shown) };
    });
    assert.deepEqual(plotted.series, plotted.rows, "a line per pool, in the table's order");
    assert.ok(plotted.points >= 3, JSON.stringify(plotted));
    assert.ok(Math.abs(plotted.shown - plotted.last) < 0.06, JSON.stringify(plotted));
    assert.equal(await page.locator("#service-web .charts canvas").count(), 3);
  });
  await step("without a token the buttons are disabled", async () => {
    assert.match(await page.locator("#who").textContent(), /read-only/);
    assert.ok(await button(page, "start").isDisabled());
    assert.ok(await page.locator("#service-web .weights button[type=submit]").isDisabled());
  });
  await step("a weight change through the API appears without a reload", async () => {
    await page.evaluate(() => { window.notReloaded = true; });
    await api("PUT", "/v1/services/web/weights", { weights: { stable: 70, canary: 30 }, reason: "from the test" });
    await page.waitForFunction(() => document.querySelector('#service-web tr[data-pool="canary"] td.weight').textContent === "30", null, { timeout: LIMIT });
    assert.ok(await page.evaluate(() => window.notReloaded));
    await page.locator("#events li", { hasText: "from the test" }).first().waitFor({ timeout: LIMIT });
  });
  await step("a read-only token shows everything and keeps the buttons off", async () => {
    await page.fill("#token", READ_TOKEN);
    await page.click("#signin button[type=submit]");
    await page.waitForFunction(() => /viewer \(read-only\)/.test(document.querySelector("#who").textContent), null, { timeout: LIMIT });
    assert.ok(await button(page, "start").isDisabled());
    assert.equal(await cell(page, "canary", "weight").textContent(), "30");
  });
  await page.screenshot({ path: `${SHOTS}/read-only.png`, fullPage: true });
  assert.deepEqual(page.problems, [], "console errors on the read-only page");

  // 2. A token that matches none: refused, said so, buttons off.
  const wrong = await open(`${ADMIN}/ui#token=not-a-token`);
  await step("a wrong token is refused with a message", async () => {
    await wrong.locator("#notice", { hasText: "This token was refused" }).waitFor({ timeout: LIMIT });
    await wrong.locator("#service-web").waitFor({ timeout: LIMIT });
    assert.ok(await button(wrong, "start").isDisabled());
  });
  // The only error is the browser's note of that refused request.
  assert.ok(wrong.problems.every((p) => /401/.test(p)), wrong.problems.join("\n"));
  await wrong.close();

  // 3. Signed in by the address (wall screens): the buttons drive the rollout.
  const admin = await open(`${ADMIN}/ui#token=${encodeURIComponent(TOKEN)}`);
  await step("#token= signs in and leaves the address", async () => {
    await admin.waitForFunction(() => /signed in as ci$/.test(document.querySelector("#who").textContent), null, { timeout: LIMIT });
    assert.equal(new URL(admin.url()).hash, "");
    await button(admin, "start").waitFor({ timeout: LIMIT });
    await admin.waitForFunction(() => !document.querySelector('#service-web button[data-action="start"]').disabled, null, { timeout: LIMIT });
  });
  await step("Start rollout starts the service's plan", async () => {
    await button(admin, "start").click();
    await admin.locator("#service-web .rollout .state", { hasText: "running" }).waitFor({ timeout: LIMIT });
    await admin.locator("#service-web .rollout", { hasText: "step 1 of 3" }).waitFor({ timeout: LIMIT });
    assert.equal((await api("GET", "/v1/services/web/rollout")).step, 0);
  });
  await step("Promote moves to the next step", async () => {
    await button(admin, "promote").click();
    await admin.locator("#service-web .rollout", { hasText: "step 2 of 3" }).waitFor({ timeout: LIMIT });
    const r = await api("GET", "/v1/services/web/rollout");
    assert.equal(r.step, 1);
    assert.equal(r.weight, 50);
    await admin.waitForFunction(() => document.querySelector('#service-web tr[data-pool="canary"] td.weight').textContent === "50", null, { timeout: LIMIT });
    // The decision says what the person did, plainly.
    await admin.locator("#service-web .decisions li b", { hasText: /^promote$/ }).first().waitFor({ timeout: LIMIT });
  });
  await admin.waitForTimeout(2500); // let the charts gather a few more points (the screenshot is looked at)
  await admin.screenshot({ path: `${SHOTS}/rollout.png`, fullPage: true });
  await step("Abort stops the rollout and puts traffic back on the baseline", async () => {
    await button(admin, "abort").click();
    await admin.locator("#service-web .rollout .state", { hasText: "aborted" }).waitFor({ timeout: LIMIT });
    assert.equal((await api("GET", "/v1/services/web/rollout")).status, "aborted");
    assert.ok(await button(admin, "promote").isDisabled(), "promote is off once the rollout is over");
  });
  assert.deepEqual(admin.problems, [], "console errors on the signed-in page");

  // 4. An admin API without tokens (loopback): the buttons write without signing in.
  const open_ = await open(`${OPEN_ADMIN}/ui`);
  await step("without tokens the page writes as anyone on this machine may", async () => {
    await open_.waitForFunction(() => /open admin API/.test(document.querySelector("#who").textContent), null, { timeout: LIMIT });
    await open_.locator('#service-web .weights input[name="canary"]').fill("40");
    await open_.locator('#service-web .weights input[name="stable"]').fill("60");
    await open_.click("#service-web .weights button[type=submit]");
    await open_.waitForFunction(() => document.querySelector('#service-web tr[data-pool="canary"] td.weight').textContent === "40", null, { timeout: LIMIT });
    await open_.click('#service-web .weights button:text("Back to config")');
    await open_.waitForFunction(() => document.querySelector('#service-web tr[data-pool="canary"] td.weight').textContent === "0", null, { timeout: LIMIT });
  });
  assert.deepEqual(open_.problems, [], "console errors on the open page");
  await open_.close();

  // 5. A phone-sized screen: one column, nothing wider than the screen.
  const phone = await open(`${ADMIN}/ui`, { width: 390, height: 844 });
  await step("on a phone the page fits the screen's width", async () => {
    await phone.locator("#service-web .charts canvas").first().waitFor({ timeout: LIMIT });
    await phone.waitForTimeout(2500); // a few polls, so the charts have lines
    const { scroll, inner } = await phone.evaluate(() => ({ scroll: document.documentElement.scrollWidth, inner: window.innerWidth }));
    assert.ok(scroll <= inner, `page is ${scroll}px wide on a ${inner}px screen`);
  });
  await phone.screenshot({ path: `${SHOTS}/phone.png`, fullPage: true });
  assert.deepEqual(phone.problems, [], "console errors on the phone");
} finally {
  await browser.close();
}
