// Device page: charts of the filtered range (detections by group per bucket and per day,
// sound level Leq and maximum) and the review buttons (admin tokens only). No inline
// handlers: the page's Content-Security-Policy refuses them.
(function () {
  'use strict';
  var EW = window.EW;

  function reviews() {
    var error = document.getElementById('ew-review-error');
    document.querySelectorAll('button.ew-review').forEach(function (button) {
      button.addEventListener('click', function () {
        EW.postJSON('/api/v1/inferences/' + encodeURIComponent(button.dataset.id) + '/review',
          {correct: button.dataset.correct === 'true'})
          .then(function () { location.reload(); })
          .catch(function (err) {
            error.hidden = false;
            error.textContent = 'review not saved (' + err.message + ')';
          });
      });
    });
  }

  function charts(data) {
    var colorOf = function (g) { return EW.colorOf(data.colors, data.other, g); };
    EW.getJSON('/api/v1/stats/activity?' + data.query).then(function (a) {
      EW.stackedBars(document.getElementById('ew-chart-activity'), a, colorOf);
    });
    EW.getJSON('/api/v1/stats/activity?bucket=day&' + data.query).then(function (a) {
      EW.stackedBars(document.getElementById('ew-chart-daily'), a, colorOf, 'day');
    });
    EW.getJSON('/api/v1/stats/levels?' + data.query).then(function (lv) {
      var labels = [];
      for (var i = 0; i < lv.buckets; i++) {
        labels.push(EW.chartLabel(new Date(new Date(lv.start).getTime() + i * lv.bucket_s * 1000), lv.bucket_s));
      }
      var canvas = document.getElementById('ew-chart-levels');
      new Chart(canvas, {type: 'line', data: {labels: labels, datasets: [
        {label: 'Leq', data: lv.leq_dbfs, borderColor: '#1464c8', pointRadius: 0, spanGaps: false},
        {label: 'loudest window', data: lv.max_dbfs, borderColor: '#e0312b', pointRadius: 0, borderDash: [4, 3]}]},
        options: {animation: false, maintainAspectRatio: false, plugins: {legend: {position: 'bottom'}},
          scales: {x: {ticks: {maxTicksLimit: 8, maxRotation: 0}}, y: {suggestedMin: -90, suggestedMax: 0, title: {display: true, text: 'dBFS'}}}}});
      canvas.dataset.drawn = String(lv.leq_dbfs.filter(function (v) { return v !== null; }).length);
    });
  }

  function start() {
    var data = JSON.parse(document.getElementById('ew-device-data').textContent);
    reviews();
    charts(data);
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
