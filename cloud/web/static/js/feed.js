// The map page's side panel: a live feed of events and alerts (newest first, a play
// button and spectrogram for each clip, click to find the device), the alert list with
// acknowledge/resolve for admin tokens, and activity charts (Chart.js, served locally).
(function () {
  'use strict';
  var EW = window.EW = window.EW || {};
  var FEED_KEEP = 300;  // items the feed keeps on the page
  var ALERTS_REFRESH_MS = 10000;

  function tabs() {
    var buttons = document.querySelectorAll('.ew-tab');
    buttons.forEach(function (b) {
      b.addEventListener('click', function () {
        buttons.forEach(function (o) {
          var on = o === b;
          o.classList.toggle('ew-active', on);
          o.setAttribute('aria-selected', on ? 'true' : 'false');
          document.getElementById('ew-tab-' + o.dataset.tab).hidden = !on;
        });
        if (b.dataset.tab === 'charts') EW.drawCharts();
      });
    });
  }

  function playButton(clipId) {
    var audio = null;
    return EW.el('button', {type: 'button', 'class': 'ew-play', title: 'play clip ' + clipId, text: '\u25b6',
      onclick: function (e) {
        e.stopPropagation();
        var btn = e.currentTarget;
        if (!audio) {
          audio = EW.el('audio', {preload: 'auto', src: '/api/v1/clips/' + clipId + '/audio'});
          audio.addEventListener('ended', function () { btn.textContent = '\u25b6'; });
          btn.parentNode.appendChild(audio);
        }
        if (audio.paused) { audio.play(); btn.textContent = '\u275a\u275a'; } else { audio.pause(); btn.textContent = '\u25b6'; }
      }});
  }

  function eventItem(it, page) {
    var color = page.colorOf(it.label);
    var opinion = null;
    if (it.second_label) {
      opinion = EW.el('span', {'class': 'ew-pill ' + (it.second_agree ? 'ew-agree' : 'ew-disagree'),
        title: 'second opinion', text: (it.second_agree ? 'agrees: ' : '2nd: ') + it.second_label});
    }
    var phase = it.phase === 'end' ? Number(it.duration_s).toFixed(1) + ' s' : it.phase;
    return EW.el('li', {'class': 'ew-item ew-kind-event', style: {'--c': color},
      'data-device': it.device_id, 'data-event': it.event_id}, [
      EW.el('div', {'class': 'ew-item-head'}, [
        EW.el('span', {'class': 'ew-item-title', text: it.label}),
        EW.timeEl(it.at)]),
      EW.el('div', {'class': 'ew-item-meta'}, [
        EW.el('span', {text: it.device_name || it.device_id}),
        ' \u00b7 peak ' + Number(it.score).toFixed(2) + ' \u00b7 ' + phase + ' ', opinion]),
      it.clip_id ? EW.el('div', {'class': 'ew-item-clip'}, [playButton(it.clip_id), ' ',
        EW.el('img', {'class': 'ew-spectrogram', loading: 'lazy', alt: 'spectrogram',
          src: '/api/v1/clips/' + it.clip_id + '/spectrogram.png'})]) : null]);
  }

  function alertItem(a, page, withActions) {
    var labels = (a.labels || []).join(' + ');
    var li = EW.el('li', {'class': 'ew-item ew-kind-alert', 'data-alert': a.id}, [
      EW.el('div', {'class': 'ew-item-head'}, [
        EW.el('span', {'class': 'ew-item-title'}, ['\u26a0 ', EW.el('span', {text: a.rule || a.label})]),
        EW.timeEl(a.at || a.started_at)]),
      EW.el('div', {'class': 'ew-item-meta'}, [
        EW.el('span', {'class': 'ew-pill ew-state-' + a.state, text: a.state}), ' ',
        EW.el('span', {'class': 'ew-pill', text: a.severity}), ' ',
        EW.el('span', {text: labels}), ' \u00b7 ',
        EW.el('span', {text: a.device_name || a.device_id || a.device || ''})])]);
    if (withActions && page.data.can_write) {
      var actions = EW.el('div', {'class': 'ew-actions'});
      [['acknowledged', 'acknowledge'], ['resolved', 'resolve'], ['false_alarm', 'false alarm']].forEach(function (s) {
        if (s[0] === a.state) return;
        actions.appendChild(EW.el('button', {type: 'button', 'class': 'ew-set-state', 'data-state': s[0],
          text: s[1], onclick: function (e) {
            e.stopPropagation();
            EW.postJSON('/api/v1/alerts/' + a.id + '/state', {state: s[0]}).then(EW.alertChanged)
              .catch(function (err) { actions.appendChild(EW.el('span', {'class': 'ew-error', text: ' not saved (' + err.message + ')'})); });
          }}));
      });
      li.appendChild(actions);
    }
    li.addEventListener('click', function () { page.openAlert(a.id); });
    return li;
  }

  function feed(page) {
    var list = document.getElementById('ew-feed-list');
    var empty = document.getElementById('ew-feed-empty');
    var pause = document.getElementById('ew-feed-pause');
    var stateLabel = document.getElementById('ew-feed-state');
    var afterEvent = 0, afterAlert = 0, paused = false, held = [], first = true;
    var byEvent = {};
    function put(it, fresh) {
      var node;
      if (it.kind === 'event') {
        node = eventItem(it, page);
        node.addEventListener('click', function () { page.focusDevice(it.device_id); });
        var old = byEvent[it.device_id + '/' + it.event_id];
        byEvent[it.device_id + '/' + it.event_id] = node;
        if (old && old.parentNode) { old.parentNode.replaceChild(node, old); return; }
      } else {
        node = alertItem(it, page, false);
      }
      if (fresh) node.classList.add('ew-new');
      list.insertBefore(node, list.firstChild);
      while (list.children.length > FEED_KEEP) list.removeChild(list.lastChild);
    }
    function show(items, fresh) {
      // items arrive newest first; insert oldest first so the newest ends on top
      items.slice().reverse().forEach(function (it) {
        put(it, fresh);
        if (fresh && it.kind === 'event' && page.tagEvent) page.tagEvent(it);
        if (fresh && it.kind === 'alert') {
          page.placeAlert({id: it.id, rule: it.label, severity: it.severity, state: it.state,
            lat: it.lat, lon: it.lon, device: it.device_id, labels: it.labels, at: it.at});
        }
      });
      empty.hidden = list.children.length > 0;
    }
    function poll() {
      var url = '/api/v1/feed?after_event=' + afterEvent + '&after_alert=' + afterAlert +
        (page.data.live.query ? '&' + page.data.live.query : '') +
        (first ? '&end=' + encodeURIComponent(page.data.range.end) : '');
      EW.getJSON(url).then(function (out) {
        afterEvent = out.after_event;
        afterAlert = out.after_alert;
        if (paused && !first) { held = out.items.concat(held); stateLabel.textContent = 'paused, ' + held.length + ' new'; return; }
        show(out.items, !first);
        first = false;
      }).catch(function (err) { console.warn('feed update failed', err.message); });
    }
    EW.alertListeners = EW.alertListeners || [];
    EW.alertListeners.push(function (a) {
      list.querySelectorAll('li[data-alert="' + Number(a.id) + '"]').forEach(function (old) {
        list.replaceChild(alertItem(a, page, false), old);
      });
    });
    pause.addEventListener('click', function () {
      paused = !paused;
      pause.textContent = paused ? 'resume' : 'pause';
      stateLabel.textContent = paused ? 'paused' : 'live';
      if (!paused && held.length) { show(held, true); held = []; }
    });
    poll();
    setInterval(poll, page.data.live.poll_ms);
  }

  function alertList(page) {
    var list = document.getElementById('ew-alert-list');
    var empty = document.getElementById('ew-alerts-empty');
    var badge = document.getElementById('ew-alert-count');
    var q = 'start=' + encodeURIComponent(page.data.range.start) + '&limit=200';
    function refresh() {
      EW.getJSON('/api/v1/alerts?' + q).then(function (items) {
        list.textContent = '';
        var open = 0;
        items.forEach(function (a) {
          if (a.state === 'open') open += 1;
          list.appendChild(alertItem(a, page, true));
          page.placeAlert({id: a.id, rule: a.rule, severity: a.severity, state: a.state, lat: a.lat,
            lon: a.lon, device: a.device_id, labels: a.labels, at: a.started_at});
        });
        empty.hidden = items.length > 0;
        badge.hidden = open === 0;
        badge.textContent = String(open);
      }).catch(function (err) { console.warn('alerts failed', err.message); });
    }
    EW.alertListeners = EW.alertListeners || [];
    EW.alertListeners.push(refresh);
    refresh();
    setInterval(refresh, ALERTS_REFRESH_MS);
  }

  EW.drawCharts = function () {
    var page = EW.page;
    var q = page.data.live.query + '&end=' + encodeURIComponent(page.data.range.end);
    EW.getJSON('/api/v1/stats/activity?' + q).then(function (a) {
      EW.stackedBars(document.getElementById('ew-chart-activity'), a, page.colorOf);
    });
    EW.getJSON('/api/v1/stats/activity?bucket=day&' + q).then(function (a) {
      EW.stackedBars(document.getElementById('ew-chart-daily'), a, page.colorOf, 'day');
    });
  };

  EW.startSide = function () {
    tabs();
    feed(EW.page);
    alertList(EW.page);
  };
})();
