package check

import (
	"encoding/json"
	"fmt"
	"io"
)

// WriteText prints the report for people.
func (r Report) WriteText(w io.Writer) {
	fmt.Fprintln(w, "Sidecar Deployment Validation Report")
	fmt.Fprintln(w, "====================================")
	for _, c := range r.Checks {
		mark := "✅"
		if !c.Passed {
			mark = "❌"
			if !c.Critical {
				mark = "⚠️ "
			}
		}
		fmt.Fprintf(w, "%s %s: %s\n", mark, c.Name, c.Detail)
	}
	fmt.Fprintf(w, "\nOverall Status: %s   (Total Checks: %d / Passed: %d / Failed: %d)\n", r.Overall, r.Total, r.Passed, r.Failed)
}

// WriteJSON prints the report for scripts.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
