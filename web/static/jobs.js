// A bulk job's page (runs/job.html): poll its JSON twin, move the progress bar, and reload once it has
// finished so the server renders the links to the new runs. State is in the database, so a reload or
// another web process shows the same progress.
"use strict";
(function () {
  const box = document.querySelector("[data-job-poll]");
  if (!box) return;
  const bar = document.getElementById("job-progress");
  const count = document.querySelector("#job-count strong");
  const state = document.getElementById("job-state");
  async function poll() {
    let job;
    try {
      const resp = await fetch(box.dataset.jobPoll, {headers: {Accept: "application/json"}});
      if (!resp.ok) throw new Error(String(resp.status));
      job = (await resp.json()).job;
    } catch (err) {
      setTimeout(poll, 3000);
      return;
    }
    bar.max = job.total;
    bar.value = job.done;
    bar.textContent = job.percent + "%";
    count.textContent = job.done.toLocaleString("en");
    state.textContent = job.state;
    state.className = "status job-" + job.state;
    if (job.finished || job.state === "stalled") {
      window.location.reload();
      return;
    }
    setTimeout(poll, 1000);
  }
  setTimeout(poll, 500);
})();
