// Device page: review buttons (shown to admin tokens only). No inline handlers: the page's
// Content-Security-Policy refuses them.
(function () {
  'use strict';
  var error = document.getElementById('ew-review-error');
  document.querySelectorAll('button.ew-review').forEach(function (button) {
    button.addEventListener('click', function () {
      fetch('/api/v1/inferences/' + encodeURIComponent(button.dataset.id) + '/review', {
        method: 'POST', credentials: 'same-origin',
        headers: {'Content-Type': 'application/json'},
        body: JSON.stringify({correct: button.dataset.correct === 'true'})
      }).then(function (r) {
        if (r.ok) { location.reload(); return; }
        error.hidden = false;
        error.textContent = 'review not saved (' + r.status + ')';
      });
    });
  });
})();
