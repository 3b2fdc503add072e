package stream

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Fields a dead letter adds to the event's own (DESIGN.md, Redis layout).
const (
	DLQFieldError      = "error"
	DLQFieldAttempts   = "attempts"
	DLQFieldGroup      = "group"
	DLQFieldOriginalID = "original_id"
)

// Fields of an entry an operator sent back from the DLQ: it is for
// FieldRedriveGroup alone; every other group acknowledges it unseen.
const (
	FieldRedriveGroup = "redrive_group"
	FieldRedrivenFrom = "redriven_from" // the dead letter's id in the DLQ
)

// redriveScript moves dead letters of one group back onto the topic's
// stream, each in one step: XADD of the event's own fields plus
// redrive_group and redriven_from, then XDEL from the DLQ. A dead letter
// that is gone (redriven or purged meanwhile) or of another group is left
// alone, so two operators redriving at once deliver it once.
// KEYS[1] stream, KEYS[2] DLQ (one hash slot); ARGV[1] group, ARGV[2..] DLQ ids.
// Returns the number moved.
var redriveScript = redis.NewScript(`
local drop = {error=true, attempts=true, group=true, original_id=true, redrive_group=true, redriven_from=true}
local moved = 0
for i = 2, #ARGV do
  local e = redis.call('XRANGE', KEYS[2], ARGV[i], ARGV[i])
  if #e == 1 then
    local f = e[1][2]
    local g = nil
    for j = 1, #f, 2 do
      if f[j] == 'group' then g = f[j+1] end
    end
    if g == ARGV[1] then
      local args = {'XADD', KEYS[1], '*'}
      for j = 1, #f, 2 do
        if not drop[f[j]] then
          args[#args+1] = f[j]
          args[#args+1] = f[j+1]
        end
      end
      args[#args+1] = 'redrive_group'
      args[#args+1] = ARGV[1]
      args[#args+1] = 'redriven_from'
      args[#args+1] = ARGV[i]
      redis.call(unpack(args))
      redis.call('XDEL', KEYS[2], ARGV[i])
      moved = moved + 1
    end
  end
end
return moved
`)

// Redrive moves the dead letters dlqIDs of group back onto topic's stream,
// in the order given, for group alone (see redriveScript). It returns how
// many it moved.
func Redrive(ctx context.Context, rdb redis.Cmdable, topic, group string, dlqIDs []string) (int, error) {
	if len(dlqIDs) == 0 {
		return 0, nil
	}
	argv := make([]any, 0, 1+len(dlqIDs))
	argv = append(argv, group)
	for _, id := range dlqIDs {
		argv = append(argv, id)
	}
	n, err := redriveScript.Run(ctx, rdb, []string{Key(topic), DLQKey(topic)}, argv...).Int()
	if err != nil {
		return 0, fmt.Errorf("redrive %s: %w", DLQKey(topic), err)
	}
	return n, nil
}
