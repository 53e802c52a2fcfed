// Shared by the map and the device page: DOM building that never parses HTML, local
// times with UTC on hover, the filter form (presets, custom range, validation), fetches.
// Every string from a device goes through textContent (el/text): a label such as
// <img onerror=...> or ${...} is shown as text, never run.
(function () {
  'use strict';
  var EW = window.EW = window.EW || {};

  EW.el = function (tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      var v = attrs[k];
      if (v === null || v === undefined || v === false) return;
      if (k === 'text') node.textContent = String(v);
      else if (k === 'style') Object.keys(v).forEach(function (p) { node.style.setProperty(p, v[p]); });
      else if (k.slice(0, 2) === 'on') node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : String(v));
    });
    (children || []).forEach(function (c) {
      if (c === null || c === undefined) return;
      node.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
    });
    return node;
  };

  var pad = function (n) { return (n < 10 ? '0' : '') + n; };
  EW.localTime = function (iso, withDate) {
    var d = new Date(iso);
    if (isNaN(d)) return String(iso);
    var today = new Date();
    var sameDay = d.toDateString() === today.toDateString();
    var time = pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
    if (sameDay && !withDate) return time;
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' + time;
  };
  EW.utcTitle = function (iso) {
    var d = new Date(iso);
    return isNaN(d) ? '' : d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  };
  EW.timeEl = function (iso, withDate) {
    return EW.el('time', {datetime: iso, title: EW.utcTitle(iso), text: EW.localTime(iso, withDate)});
  };
  // Server-rendered <time datetime=...> show UTC; in the browser they show local time.
  EW.localizeTimes = function (root) {
    (root || document).querySelectorAll('time[datetime]').forEach(function (t) {
      if (t.dataset.ewLocal) return;
      var iso = t.getAttribute('datetime');
      t.title = EW.utcTitle(iso);
      t.textContent = EW.localTime(iso, true);
      t.dataset.ewLocal = '1';
    });
  };

  EW.getJSON = function (url) {
    return fetch(url, {credentials: 'same-origin'}).then(function (r) {
      if (!r.ok) {
        return r.json().catch(function () { return {}; }).then(function (body) {
          var err = new Error(url + ': ' + r.status + ' ' + (body.detail ? JSON.stringify(body.detail) : ''));
          err.status = r.status;
          throw err;
        });
      }
      return r.json();
    });
  };
  // Scripts only some visits need (Chart.js for the charts tab, PMTiles for local tiles),
  // loaded on first use so the map's first draw does not wait for them to compile.
  var loading = {};
  EW.loadScript = function (src) {
    if (!loading[src]) {
      loading[src] = new Promise(function (resolve, reject) {
        var s = document.createElement('script');
        s.src = src;
        s.onload = resolve;
        s.onerror = function () { reject(new Error('could not load ' + src)); };
        document.head.appendChild(s);
      });
    }
    return loading[src];
  };
  EW.VENDOR = {
    chart: ['/static/vendor/chartjs/chart.umd.min.js'],
    pmtiles: ['/static/vendor/pmtiles/pmtiles.js', '/static/vendor/protomaps/protomaps-leaflet.js']
  };
  EW.loadScripts = function (srcs) {
    return srcs.reduce(function (p, src) {
      return p.then(function () { return EW.loadScript(src); });
    }, Promise.resolve());
  };
  // Resolves after the browser has painted what is in the DOM now: heavy work started
  // from here never delays the first picture.
  EW.afterPaint = function () {
    return new Promise(function (resolve) {
      requestAnimationFrame(function () { setTimeout(resolve, 0); });
    });
  };

  EW.postJSON = function (url, body) {
    return fetch(url, {method: 'POST', credentials: 'same-origin',
      headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)})
      .then(function (r) { return r.ok ? r.json() : Promise.reject(new Error(r.status)); });
  };

  EW.colorOf = function (colors, other, group) {
    return Object.prototype.hasOwnProperty.call(colors, group) ? colors[group] : other;
  };

  // A <input type=datetime-local> value (local time) as ISO UTC, and back.
  function toLocalInput(iso) {
    var d = new Date(iso);
    if (isNaN(d)) return '';
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + 'T' +
      pad(d.getHours()) + ':' + pad(d.getMinutes());
  }

  function setupFilterForm() {
    var form = document.getElementById('ew-filter');
    if (!form) return;
    var custom = document.getElementById('ew-custom');
    var startLocal = document.getElementById('ew-start-local');
    var endLocal = document.getElementById('ew-end-local');
    var error = document.getElementById('ew-form-error');
    var times = document.querySelectorAll('#ew-range time');
    startLocal.value = toLocalInput(form.elements.start.value || (times[0] && times[0].getAttribute('datetime')));
    endLocal.value = toLocalInput(form.elements.end.value || (times[1] && times[1].getAttribute('datetime')));
    var toggle = document.getElementById('ew-custom-toggle');
    if (toggle) {
      toggle.addEventListener('click', function () {
        custom.hidden = !custom.hidden;
        if (!custom.hidden) startLocal.focus();
      });
    }
    form.addEventListener('submit', function (e) {
      var problems = [];
      if (!custom.hidden) {
        var s = startLocal.value ? new Date(startLocal.value) : null;
        var t = endLocal.value ? new Date(endLocal.value) : null;
        if (s && t && s >= t) problems.push('the start must be before the end');
        form.elements.start.value = s ? s.toISOString() : '';
        form.elements.end.value = t ? t.toISOString() : '';
        if (form.elements.range) form.elements.range.disabled = true;
      }
      Array.prototype.forEach.call(form.elements, function (input) {
        if (input.validity && !input.validity.valid) {
          problems.push((input.name || 'a field') + ': ' + input.validationMessage);
        }
      });
      // Empty fields would clutter the shareable URL: leave them out.
      Array.prototype.forEach.call(form.elements, function (input) {
        if (input.name && input.value === '') input.disabled = true;
      });
      if (problems.length) {
        e.preventDefault();
        Array.prototype.forEach.call(form.elements, function (input) { input.disabled = false; });
        error.hidden = false;
        error.textContent = problems.join('; ');
      }
    });
  }

  // The bar wraps on narrow screens: the layout below follows its real height.
  EW.fitLayout = function () {
    var bar = document.getElementById('ew-bar');
    if (bar) document.documentElement.style.setProperty('--bar-h', bar.offsetHeight + 'px');
  };

  function start() {
    EW.localizeTimes(document);
    setupFilterForm();
    EW.fitLayout();
    window.addEventListener('resize', EW.fitLayout);
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
