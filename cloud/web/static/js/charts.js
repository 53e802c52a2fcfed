// Charts shared by the map's side panel and the device page (Chart.js, served locally).
(function () {
  'use strict';
  var EW = window.EW = window.EW || {};

  var pad = function (n) { return (n < 10 ? '0' : '') + n; };
  // Short axis labels: the time of day, with the date where a bucket is a day or more.
  EW.chartLabel = function (t, bucketS, unit) {
    var day = pad(t.getMonth() + 1) + '-' + pad(t.getDate());
    if (unit === 'day' || bucketS >= 86400) return day;
    var hm = pad(t.getHours()) + ':' + pad(t.getMinutes());
    return (t.getHours() === 0 && t.getMinutes() < bucketS / 60) || bucketS >= 6 * 3600 ? day + ' ' + hm : hm;
  };

  // Charts: stacked bars per label group, in the groups' own colours (Chart.js is loaded
  // on first use where the page did not load it).
  EW.stackedBars = function (canvas, activity, colorOf, unit) {
    if (!window.Chart) {
      return EW.loadScripts(EW.VENDOR.chart).then(function () {
        return EW.stackedBars(canvas, activity, colorOf, unit);
      });
    }
    var labels = [];
    for (var i = 0; i < activity.buckets; i++) {
      var t = new Date(new Date(activity.start).getTime() + i * activity.bucket_s * 1000);
      labels.push(EW.chartLabel(t, activity.bucket_s, unit));
    }
    var datasets = activity.groups.map(function (g) {
      return {label: g, data: activity.series[g], backgroundColor: colorOf(g), stack: 'all'};
    });
    if (canvas.ewChart) canvas.ewChart.destroy();
    canvas.ewChart = new Chart(canvas, {type: 'bar', data: {labels: labels, datasets: datasets},
      options: {animation: false, maintainAspectRatio: false, plugins: {legend: {position: 'bottom', labels: {boxWidth: 10}}},
        scales: {x: {stacked: true, ticks: {maxTicksLimit: 8, maxRotation: 0}},
          y: {stacked: true, beginAtZero: true}}}});
    canvas.dataset.drawn = String(activity.groups.length);
    return Promise.resolve(canvas.ewChart);
  };
})();
