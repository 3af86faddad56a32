// Open an executed notebook in JupyterLab (served on localhost) in headless Chromium, with
// every request that is not to localhost refused, wait for the plots to render, take a
// screenshot, and check that a rendered plot (an SVG or canvas inside a plotly plot) exists
// and that nothing shows in a stderr box (progress bars and errors print on stdout, each bar
// one line); a second screenshot shows the training cell's progress lines.
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
  stderr_boxes: document.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]').length,
}));
await page.screenshot({ path: shot });
// The training cell: its stdout holds one summary line per progress bar.
const training = page.locator('[data-mime-type="application/vnd.jupyter.stdout"]', { hasText: 'batches in' }).first();
let progress_lines = [];
try {
  await training.scrollIntoViewIfNeeded({ timeout: 30000 });
  progress_lines = (await training.innerText()).split('\n').filter((l) => l.trim() !== '');
  await page.waitForTimeout(500);
  await page.screenshot({ path: shot.replace(/\.png$/, '-progress.png') });
} catch (e) {
  console.error(`no training progress on stdout: ${e.message}`);
}
counts.progress_lines = progress_lines.length;
counts.progress_sample = progress_lines[0] || '';
const bars_ok = progress_lines.length > 0 && progress_lines.every((l) => l.includes(' in ') && !l.includes('['));
console.log(JSON.stringify({ url: url.replace(/token=[^&]*/, 'token=…'), screenshot: shot, ...counts, refused_requests: refused.length }));
await browser.close();
if (counts.stderr_boxes > 0) console.error(`${counts.stderr_boxes} stderr box(es) in the notebook`);
if (!bars_ok) console.error(`progress is not one summary line per bar: ${JSON.stringify(progress_lines.slice(0, 5))}`);
process.exit(ok && counts.plotly_svg > 0 && counts.stderr_boxes === 0 && bars_ok ? 0 : 1);
