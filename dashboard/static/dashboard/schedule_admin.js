// The periodic task admin form (commands/admin.py, ScheduleAdmin): under the chosen
// crontab, its reading in words. django-celery-beat's inline script, as a file for the
// Content-Security-Policy; the help text comes from the script tag's data attribute.
"use strict";
(() => {
  const $ = django.jQuery;
  const readableCrontabs = JSON.parse(document.getElementById("readable-crontabs").textContent);
  const originalCrontabHelp = document.currentScript.dataset.crontabHelp;
  const help = $(".field-crontab .help");
  const updateCrontabHelp = (additional) => {
    // Text, not HTML: a crontab's reading is data.
    help.text(originalCrontabHelp).append("<br>").append(document.createTextNode(`Translation: ${additional}`));
  };
  $(".field-crontab_translation").hide();
  $(".field-crontab").change(() => updateCrontabHelp(readableCrontabs[$("#id_crontab").val()]));
})();
