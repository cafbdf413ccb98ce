// Injected at the top of a report page by test_report_browser.sh: records every script and
// resource error and console.error, then after loading draws each plot's SVG onto a canvas and
// counts its coloured pixels (the data: the axes and labels are black, the page white). The
// verdict goes into <pre id="browser-check"> for --dump-dom.
(function () {
  const errors = [];
  window.addEventListener('error', (e) => errors.push(String(e.message || (e.target && e.target.outerHTML))), true);
  const consoleError = console.error;
  console.error = (...args) => { errors.push(args.join(' ')); consoleError(...args); };
  async function coloured(svg) {
    const box = svg.getBoundingClientRect();
    const w = Math.ceil(box.width), h = Math.ceil(box.height);
    if (w === 0 || h === 0) return 0;
    const img = new Image();
    const text = new XMLSerializer().serializeToString(svg);
    await new Promise((ok, bad) => {
      img.onload = ok;
      img.onerror = () => bad(new Error('an SVG did not load as an image'));
      img.src = 'data:image/svg+xml;charset=utf-8,' + encodeURIComponent(text);
    });
    const canvas = document.createElement('canvas');
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext('2d');
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, w, h);
    ctx.drawImage(img, 0, 0, w, h);
    const d = ctx.getImageData(0, 0, w, h).data;
    let n = 0;
    for (let k = 0; k < d.length; k += 4) {
      if (Math.max(d[k], d[k + 1], d[k + 2]) - Math.min(d[k], d[k + 1], d[k + 2]) > 60) n++;
    }
    return n;
  }
  window.addEventListener('load', async () => {
    const plots = [...document.querySelectorAll('figure.plot')];
    const blank = [];
    for (const figure of plots) {
      const svg = figure.querySelector('svg');
      let n = 0;
      try {
        n = svg ? await coloured(svg) : 0;
      } catch (e) {
        errors.push(figure.id + ': ' + e.message);
      }
      if (n < 50) blank.push(figure.id + ' (' + n + ' coloured pixels)');
    }
    const out = document.createElement('pre');
    out.id = 'browser-check';
    out.textContent = 'plots=' + plots.length + ' blank=' + JSON.stringify(blank) + ' errors=' + JSON.stringify(errors);
    document.body.appendChild(out);
  });
})();
