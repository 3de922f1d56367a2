// cl-bench report: sortable, filterable tables and a column toggle. No dependencies, no network.
"use strict";

(function () {
  // the value a cell sorts by: its data-sort attribute (an exact number) or its text
  function cellValue(row, index) {
    var cell = row.cells[index];
    if (!cell) {
      return "";
    }
    return cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
  }

  function isNumber(text) {
    return text !== "" && isFinite(Number(text));
  }

  function sortTable(table, header) {
    var index = header.cellIndex;
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    // numeric when every non-empty value of the column is a number
    var numeric = rows.every(function (row) {
      var value = cellValue(row, index);
      return value === "" || isNumber(value);
    });
    rows.sort(function (first, second) {
      var a = cellValue(first, index);
      var b = cellValue(second, index);
      if (a === "" || b === "") {
        return (a === "") - (b === "");  // empty cells last, whatever the direction
      }
      var order = numeric ? Number(a) - Number(b) : a.localeCompare(b, undefined, { numeric: true });
      return ascending ? order : -order;
    });
    rows.forEach(function (row) {
      body.appendChild(row);
    });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (cell) {
      cell.removeAttribute("aria-sort");
    });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }

  function countRows(table) {
    var shown = 0;
    var rows = table.tBodies[0].rows;
    for (var i = 0; i < rows.length; i++) {
      if (!rows[i].hidden) {
        shown++;
      }
    }
    var counter = document.querySelector('.row-count[data-table="' + table.id + '"]');
    if (counter) {
      counter.textContent = shown + " of " + rows.length + " rows";
    }
  }

  // every word typed must occur in the row (config included), case-insensitive
  function filterTable(table, text) {
    var words = text.toLowerCase().split(/\s+/).filter(Boolean);
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      var content = row.textContent.toLowerCase();
      row.hidden = !words.every(function (word) {
        return content.indexOf(word) >= 0;
      });
    });
    countRows(table);
  }

  function setUp() {
    Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header) {
        var button = header.querySelector("button.sort");
        if (button) {
          button.addEventListener("click", function () {
            sortTable(table, header);
          });
        }
      });
      countRows(table);
    });
    Array.prototype.forEach.call(document.querySelectorAll("input.row-filter"), function (input) {
      var table = document.getElementById(input.getAttribute("data-table"));
      if (table) {
        input.addEventListener("input", function () {
          filterTable(table, input.value);
        });
      }
    });
    Array.prototype.forEach.call(document.querySelectorAll("button.column-toggle"), function (button) {
      var table = document.getElementById(button.getAttribute("data-table"));
      if (table) {
        button.addEventListener("click", function () {
          var shown = table.classList.toggle("show-extra");
          button.textContent = shown ? "hide the other columns" : "show every column";
          button.setAttribute("aria-pressed", shown ? "true" : "false");
        });
      }
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setUp);
  } else {
    setUp();
  }
})();
