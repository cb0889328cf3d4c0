// Progressive enhancement only: every form works without this file.
// The "Test connection" button sends the form in the background, so that what the
// user typed (the password too) stays in the fields while the result is shown.
(function () {
  "use strict";
  var button = document.querySelector("[data-test-connection]");
  var out = document.getElementById("connection-result");
  if (!button || !out || !window.fetch) { return; }

  button.addEventListener("click", function (event) {
    event.preventDefault();
    var form = button.form;
    var data = new URLSearchParams(new FormData(form));
    data.set("action", "test");
    button.disabled = true;
    out.className = "test-result notice notice-info";
    out.textContent = "Testing the connection…";
    fetch(form.getAttribute("action"), {
      method: "POST",
      body: data,
      credentials: "same-origin",
      headers: { "X-Requested-With": "fetch" }
    })
      .then(function (response) { return response.json(); })
      .then(function (result) {
        out.className = "test-result notice " + (result.ok ? "notice-ok" : "notice-bad");
        out.textContent = result.message;
        out.setAttribute("data-outcome", result.outcome);
      })
      .catch(function () {
        out.className = "test-result notice notice-bad";
        out.textContent = "The test could not be run; try again.";
      })
      .finally(function () { button.disabled = false; });
  });
})();

// Step 1 shows the fields of the chosen authentication only; without this file both
// sets stay visible and the server reads the ones of the chosen kind.
(function () {
  "use strict";
  var choice = document.querySelector("[data-auth-choice]");
  if (!choice) { return; }
  var groups = document.querySelectorAll("[data-auth]");

  function show() {
    var chosen = choice.querySelector("input[name=auth_kind]:checked");
    var kind = chosen ? chosen.value : "basic";
    groups.forEach(function (group) {
      group.hidden = group.getAttribute("data-auth") !== kind;
    });
  }

  choice.addEventListener("change", show);
  show();
})();
