// Open an executed notebook in JupyterLab (served on localhost) in headless Chromium, with
// every request that is not to localhost refused, wait for the plots to render, take a
// screenshot, and check that a rendered plot (an SVG or canvas inside a plotly plot) exists.
//
//   node browser_check.mjs URL SCREENSHOT.png
import { chromium } from 'playwright-core';

const [url, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
const refused = [];
await page.route('**/*', (route) => {
  const u = new URL(route.request().url());
  if (u.hostname === 'localhost' || u.hostname === '127.0.0.1' || u.protocol === 'data:' || u.protocol === 'blob:') {
    return route.continue();
  }
  refused.push(u.href);
  return route.abort();
});
await page.goto(url, { waitUntil: 'domcontentloaded', timeout: 120000 });
const plot = page.locator('.js-plotly-plot .main-svg').first();
let ok = true;
try {
  await plot.waitFor({ state: 'attached', timeout: 180000 });
  await plot.scrollIntoViewIfNeeded();
  await page.waitForTimeout(2000);
} catch (e) {
  ok = false;
  console.error(`no rendered plotly plot: ${e.message}`);
}
const counts = await page.evaluate(() => ({
  plotly_svg: document.querySelectorAll('.js-plotly-plot svg').length,
  plotly_plots: document.querySelectorAll('.js-plotly-plot').length,
  static_svg: document.querySelectorAll('.jp-RenderedSVG svg, .jp-RenderedImage img').length,
  canvas: document.querySelectorAll('.js-plotly-plot canvas').length,
  tables: document.querySelectorAll('.jp-RenderedHTMLCommon table.dataframe').length,
}));
await page.screenshot({ path: shot });
console.log(JSON.stringify({ url: url.replace(/token=[^&]*/, 'token=…'), screenshot: shot, ...counts, refused_requests: refused.length }));
await browser.close();
process.exit(ok && counts.plotly_svg > 0 ? 0 : 1);
